"""What the driver tests with a UMA model share: the tiny official-format
checkpoint, its 8-atom alloy, a float64 mode file and a one-thread environment."""

from __future__ import annotations

import json
import os
from pathlib import Path

import ase

from tests.reference import sheared_cu3au

CHECKPOINT = Path(__file__).resolve().parents[1] / "data" / "uma_s1p1.pt"


def uma_alloy() -> ase.Atoms:
    """8 atoms of Cu3Au (L1_2) in a sheared, non-upper-triangular cell, rattled."""
    return sheared_cu3au((2, 1, 1), shear=(0.4, -0.3), seed=4)


def float64_mode(folder: Path) -> Path:
    """A ``--mode`` file: the default settings in float64."""
    path = folder / "float64.json"
    path.write_text(json.dumps({"base_precision_dtype": "float64"}))
    return path


def one_thread_env() -> dict:
    """The driver's environment: one torch thread (CI machines have few cores
    shared by parallel tests; more threads only contend)."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}
