"""Fixtures for the model tests: the committed tiny UMA checkpoints and the
fairchem-core answers on them (``tests/data/README.md`` says how they were made)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from umadrive.model import InferenceSettings, System, get_predict_unit
from umadrive.structure import Structure

DATA = Path(__file__).resolve().parents[1] / "data"
CHECKPOINTS = ("s1p1", "m1p1", "s1p0")


def checkpoint_path(name: str) -> Path:
    return DATA / f"uma_{name}.pt"


@lru_cache(maxsize=None)
def predict_unit(name: str, dtype: torch.dtype = torch.float64):
    """A predict unit of a committed checkpoint (loaded once per test session)."""
    return get_predict_unit(checkpoint_path(name),
                            inference_settings=InferenceSettings(base_precision_dtype=dtype))


def reference_cases(name: str) -> list[tuple[str, System, dict]]:
    """(label, system, fairchem's answer) for the six reference structures."""
    data = np.load(DATA / f"uma_{name}_reference.npz")
    cases = []
    for entry in json.loads(str(data["index"])):
        label = entry["label"]
        system = System(
            numbers=data[f"{label}/numbers"],
            structure=Structure(positions=data[f"{label}/positions"],
                                cell=data[f"{label}/cell"], pbc=data[f"{label}/pbc"]),
            task=entry["task"], charge=entry["charge"], spin=entry["spin"])
        answer = {"energy": float(data[f"{label}/energy"]), "forces": data[f"{label}/forces"],
                  "stress": data[f"{label}/stress"] if f"{label}/stress" in data else None}
        cases.append((label, system, answer))
    return cases


@pytest.fixture(scope="session")
def uma_unit():
    """``uma_unit(name, dtype=torch.float64)``: a cached predict unit of a committed checkpoint."""
    return predict_unit


@pytest.fixture(scope="session")
def uma_cases():
    """``uma_cases(name)``: the reference structures and fairchem's answers."""
    return reference_cases


@pytest.fixture(scope="session")
def uma_checkpoint_path():
    """``uma_checkpoint_path(name)``: path of a committed checkpoint."""
    return checkpoint_path
