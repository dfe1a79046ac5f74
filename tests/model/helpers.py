"""The model tests' shared pieces: the committed tiny UMA checkpoints, fairchem-core's
answers on them (``tests/data/README.md`` says how they were made) and systems
built from ASE atoms."""

from __future__ import annotations

import dataclasses
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from umadrive.model import InferenceSettings, PredictUnit, System, get_predict_unit
from umadrive.structure import Structure

from tests.reference import DATA

CHECKPOINTS = ("s1p1", "m1p1", "s1p0")
DTYPES = (torch.float32, torch.float64)


def checkpoint_path(name: str) -> Path:
    return DATA / f"uma_{name}.pt"


@lru_cache(maxsize=None)
def predict_unit(name: str, dtype: torch.dtype = torch.float64) -> PredictUnit:
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


def system_of(atoms: Atoms, task: str, charge: int = 0, spin: int = 0) -> System:
    """A copy of ``atoms`` as a System for ``task``."""
    return System(numbers=atoms.numbers.copy(),
                  structure=Structure(positions=atoms.positions.copy(),
                                      cell=atoms.cell.array.copy(), pbc=atoms.pbc.copy()),
                  task=task, charge=charge, spin=spin)


def rattled(system: System, scale: float, seed: int) -> System:
    """``system`` with its positions displaced by normal noise of ``scale`` Å."""
    rng = np.random.default_rng(seed)
    positions = system.structure.positions + rng.normal(scale=scale,
                                                        size=system.structure.positions.shape)
    return dataclasses.replace(system, structure=dataclasses.replace(system.structure,
                                                                     positions=positions))
