"""The predict unit: a loaded UMA model answering batches of systems.

``get_predict_unit(model, device, inference_settings)`` loads a checkpoint once;
``PredictUnit.predict(systems)`` returns one :class:`~umadrive.structure.Prediction`
per :class:`System`. This is the plain (default-mode) path: the merged-experts,
compile and activation-checkpointing modes of :class:`InferenceSettings` are
accepted and currently run this same path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from umadrive.model.checkpoint import load_checkpoint
from umadrive.model.graph import radius_graph
from umadrive.model.names import resolve_model
from umadrive.model.settings import InferenceSettings, resolve_settings
from umadrive.model.uma import UMA, AtomsBatch
from umadrive.structure import Prediction, Structure

CHARGE_RANGE = (-100, 100)
SPIN_RANGE = (0, 100)


class InvalidSystemError(ValueError):
    """A system the model cannot evaluate (unknown task, element, charge or spin)."""


@dataclass(frozen=True)
class System:
    """One system to evaluate.

    numbers: (n,) int atomic numbers. structure: positions (n, 3) Å, cell rows,
    pbc. task: the dataset whose conventions to predict ("omat", "omol", ...).
    charge: total charge (e). spin: spin multiplicity 2S+1 (0 = unset).
    """

    numbers: np.ndarray
    structure: Structure
    task: str
    charge: int
    spin: int


def _check_system(index: int, system: System, unit: "PredictUnit") -> None:
    where = f"system {index}"
    numbers = np.asarray(system.numbers)
    positions = np.asarray(system.structure.positions)
    if numbers.ndim != 1 or numbers.shape[0] == 0:
        raise InvalidSystemError(f"{where}: numbers must be a non-empty 1-d array, got shape "
                                 f"{numbers.shape}")
    if positions.shape != (numbers.shape[0], 3):
        raise InvalidSystemError(f"{where}: positions have shape {positions.shape}, expected "
                                 f"({numbers.shape[0]}, 3) for {numbers.shape[0]} atoms")
    if not np.issubdtype(numbers.dtype, np.integer):
        raise InvalidSystemError(f"{where}: numbers must be integers, got dtype {numbers.dtype}")
    max_z = unit.model.config.max_num_elements - 1
    bad = numbers[(numbers < 1) | (numbers > max_z)]
    if bad.size:
        raise InvalidSystemError(f"{where}: atomic number {int(bad[0])} is outside 1..{max_z}, "
                                 f"the elements this model knows")
    if system.task not in unit.datasets:
        raise InvalidSystemError(f"{where}: task {system.task!r} is not one of this model's "
                                 f"tasks {list(unit.datasets)}")
    for name, value, (low, high) in (("charge", system.charge, CHARGE_RANGE),
                                     ("spin", system.spin, SPIN_RANGE)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InvalidSystemError(f"{where}: {name} must be an integer, got {value!r}")
        if not low <= value <= high:
            raise InvalidSystemError(f"{where}: {name}={value} is outside [{low}, {high}]")
    if not np.all(np.isfinite(positions)) or not np.all(np.isfinite(system.structure.cell)):
        raise InvalidSystemError(f"{where}: positions and cell must be finite")


class PredictUnit:
    """A UMA model on one device with fixed inference settings."""

    def __init__(self, model: UMA, *, device: torch.device, settings: InferenceSettings) -> None:
        self.model = model
        self.device = device
        self.settings = settings
        self.model.requires_grad_(False)

    @property
    def datasets(self) -> tuple[str, ...]:
        """The task names this model predicts for."""
        return self.model.datasets

    @property
    def dtype(self) -> torch.dtype:
        return self.settings.base_precision_dtype

    def batch(self, systems: Sequence[System]) -> AtomsBatch:
        """The systems as one batch of tensors on the model's device (validated)."""
        if not systems:
            raise InvalidSystemError("predict() needs at least one system")
        for index, system in enumerate(systems):
            _check_system(index, system, self)
        def tensor(values, dtype):
            return torch.as_tensor(np.asarray(values), dtype=dtype, device=self.device)
        sizes = [len(system.numbers) for system in systems]
        return AtomsBatch(
            numbers=tensor(np.concatenate([system.numbers for system in systems]), torch.long),
            positions=tensor(np.concatenate([system.structure.positions for system in systems]),
                             self.dtype),
            cell=tensor(np.stack([system.structure.cell for system in systems]), self.dtype),
            pbc=tensor(np.stack([system.structure.pbc for system in systems]), torch.bool),
            batch=torch.repeat_interleave(torch.arange(len(systems), device=self.device),
                                          tensor(sizes, torch.long)),
            charge=tensor([int(system.charge) for system in systems], torch.long),
            spin=tensor([int(system.spin) for system in systems], torch.long),
            datasets=tuple(system.task for system in systems),
        )

    def predict(self, systems: Sequence[System]) -> list[Prediction]:
        """Energy (eV), forces (eV/Å) and stress (eV/Å³, when the cell has a volume)
        of each system, in order. Any mix of systems may share a batch."""
        atoms = self.batch(systems)
        graph = radius_graph(atoms.positions, atoms.cell, atoms.pbc, atoms.batch,
                             cutoff=self.model.cutoff, max_neighbors=self.model.max_neighbors,
                             version=self.settings.internal_graph_gen_version)
        outputs = self.model(atoms, graph)
        energy = outputs.energy.cpu().numpy()
        forces = outputs.forces.detach().cpu().double().numpy()
        stress = outputs.stress.detach().cpu().double().numpy()
        starts = np.cumsum([0] + [len(system.numbers) for system in systems])
        predictions = []
        for index in range(len(systems)):
            system_stress = stress[index]
            predictions.append(Prediction(
                energy=float(energy[index]),
                forces=forces[starts[index]:starts[index + 1]],
                stress=None if np.isnan(system_stress).all() else system_stress))
        return predictions


def get_predict_unit(model: str | os.PathLike, device: str | torch.device = "cpu",
                     inference_settings: str | InferenceSettings = "default") -> PredictUnit:
    """Load a UMA checkpoint once and return a :class:`PredictUnit` for it.

    model: path of a UMA checkpoint (fairchem's ``.pt`` or umadrive's own format) or a
        model name ("uma-s-1p1", ...; see :func:`umadrive.model.names.resolve_model`).
    device: torch device, e.g. "cpu" or "cuda".
    inference_settings: "default", "turbo" or an :class:`InferenceSettings`.
    """
    settings = resolve_settings(inference_settings)
    device = torch.device(device)
    checkpoint = load_checkpoint(resolve_model(model))
    uma = UMA.from_checkpoint(checkpoint, dtype=settings.base_precision_dtype, device=device)
    return PredictUnit(uma, device=device, settings=settings)
