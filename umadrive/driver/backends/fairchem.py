"""The fairchem backend (``--model fairchem:NAME_OR_PATH``): fairchem-core's own
predict unit, with its kernels and inference presets, answering every structure
of a step in ONE ``predict`` call on a batch of fairchem ``AtomicData``.

The checkpoint is found like ours (:func:`umadrive.model.names.resolve_model`:
the same cache files) and read with umadrive's restricted unpickler
(:func:`umadrive.model.safe_gate.check_checkpoint`) before fairchem is
imported for it; fairchem then unpickles it with full pickle.

``--mode`` (see :data:`MODE_PRESETS`): ``default`` runs fairchem's ``batch``
preset (the settings of our default: float32, experts routed, no compile),
``turbo`` its ``nitro`` preset (fairchem's own default: UMA Nitro for
UMA-S-1.2.1 on a CUDA device with one structure per call, otherwise merged
experts + ``torch.compile`` + TF32); any other fairchem preset name
(``high-precision``, ``batch``, ``multigpu``, ``nitro``, ``traineval``); or the
path of a JSON object of fairchem ``InferenceSettings`` fields over ``batch``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ase
import numpy as np
import torch

from umadrive.driver.backends.options import UmaOptions, choose_task
from umadrive.driver.backends.uma import torch_device
from umadrive.model.calculator import default_spin
from umadrive.model.names import resolve_model
from umadrive.model.safe_gate import check_checkpoint
from umadrive.structure import Prediction, Structure

log = logging.getLogger("umadrive.driver")

INSTALL_HINT = "pip install 'umadrive[fairchem]'"

MODE_PRESETS = {"default": "batch", "turbo": "nitro"}
"""Our ``--mode`` names → the fairchem preset each runs. fairchem's own preset
``default`` is the same as its ``nitro``; the name ``default`` means ours."""

# The settings whose change during a predict call is one of fairchem's fall-backs.
_FALLBACK_FIELDS = ("nitro", "merge_mole", "compile", "execution_mode")
# fairchem's calculator builds its graphs with these (ase_calculator.py).
_RADIUS = 6.0  # Å
_EXTERNAL_MAX_NEIGHBORS = 300


def fairchem_settings(mode: str, presets: dict[str, Any]) -> Any:
    """fairchem ``InferenceSettings`` for ``--mode``: one of ours
    (:data:`MODE_PRESETS`), a fairchem preset name, or a JSON file of fields
    over the ``batch`` preset. ``presets``: fairchem's name → settings table."""
    names = sorted({*MODE_PRESETS, *presets})
    if mode in MODE_PRESETS:
        return dataclasses.replace(presets[MODE_PRESETS[mode]])
    if mode in presets:
        return dataclasses.replace(presets[mode])
    path = Path(mode)
    if not path.is_file():
        raise ValueError(f"--mode {mode!r} with a fairchem: model: expected one of {names}, or "
                         "the path of a JSON file of fairchem InferenceSettings fields "
                         "(no such file)")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"--mode {mode!r} is not JSON ({error})") from None
    base = presets[MODE_PRESETS["default"]]
    fields = {field.name for field in dataclasses.fields(base)}
    if not isinstance(values, dict) or set(values) - fields:
        unknown = sorted(set(values) - fields) if isinstance(values, dict) else values
        raise ValueError(f"--mode {mode!r}: {unknown!r} are not fairchem InferenceSettings "
                         f"fields; expected a JSON object with keys from {sorted(fields)}")
    try:
        return dataclasses.replace(base, **values)
    except (AssertionError, AttributeError, TypeError) as error:
        raise ValueError(f"--mode {mode!r}: fairchem refuses these settings ({error})") from None


class FairchemBackend:
    """A fairchem predict unit for the template's species (atom order as in the
    template); every ``compute`` is one ``predict`` call on one batch.

    unit: a fairchem ``MLIPPredictUnit``. fairchem_data: fairchem's
    ``(AtomicData, atomicdata_list_to_batch)``. device: where the unit runs.
    """

    def __init__(self, unit: Any, template: ase.Atoms, *, task: str, charge: int, spin: int,
                 name: str, fairchem_data: tuple[Any, Any], device: torch.device) -> None:
        datasets = sorted(unit.dataset_to_tasks)
        if task not in datasets:
            raise ValueError(f"--task {task!r}: {name} predicts for {datasets}")
        self.name = name
        self.unit = unit
        self.fallbacks = 0
        self._atomic_data, self._to_batch = fairchem_data
        self._device = device
        self._template = ase.Atoms(numbers=template.numbers)
        self._template.info.update(charge=charge, spin=spin)
        self._task = task
        try:
            unit.validate_atoms_data(self._template.copy(), task)
        except (TypeError, ValueError) as error:
            raise ValueError(f"--charge {charge} / --spin {spin}: {error}") from None
        # refuses unknown elements now rather than at the first request; with a
        # merging preset, merges (and compiles) for the template here
        self.compute([Structure.from_atoms(template)])

    @classmethod
    def load(cls, model: str, template: ase.Atoms, options: UmaOptions) -> FairchemBackend:
        """``model``: a checkpoint path or model name. Checks the file with the
        restricted unpickler before importing fairchem, then loads it once."""
        device = torch_device(options.device)
        if importlib.util.find_spec("fairchem") is None:
            raise ValueError(f"--model 'fairchem:{model}' needs fairchem-core: {INSTALL_HINT}")
        try:
            path = resolve_model(model)
        except FileNotFoundError as error:
            raise ValueError(f"--model 'fairchem:{model}': {error}") from None
        check_checkpoint(path)
        try:
            from fairchem.core.datasets.atomic_data import AtomicData, atomicdata_list_to_batch
            from fairchem.core.units.mlip_unit import load_predict_unit
            from fairchem.core.units.mlip_unit.api.inference import NAME_TO_INFERENCE_SETTING
        except ImportError as error:
            raise ValueError(f"--model 'fairchem:{model}': fairchem-core cannot be imported "
                             f"({error}); {INSTALL_HINT}") from None
        settings = fairchem_settings(options.mode, NAME_TO_INFERENCE_SETTING)
        log.info("loading %s with fairchem on %s (mode %s)...", path, device, options.mode)
        start = time.perf_counter()
        with _on(device):
            unit = load_predict_unit(str(path), settings, device=device.type)
        datasets = sorted(unit.dataset_to_tasks)
        log.info("loaded %s with fairchem in %.1f s: tasks %s", path.name,
                 time.perf_counter() - start, datasets)
        task = choose_task(model, datasets, options.task)
        spin = options.spin if options.spin is not None else default_spin(task)
        with _on(device):
            return cls(unit, template, task=task, charge=options.charge, spin=spin,
                       name=f"fairchem:{path.name} ({task})",
                       fairchem_data=(AtomicData, atomicdata_list_to_batch), device=device)

    def compute(self, structures: Sequence[Structure]) -> list[Prediction]:
        batch = self._to_batch([self._data(structure) for structure in structures])
        before = self._watched_settings()
        with _on(self._device):
            output = self.unit.predict(batch)
        if self._watched_settings() != before:
            self.fallbacks += 1
            log.warning("fairchem fell back on a step of %d structures (its reason above): "
                        "%s -> %s; this and the following steps run on the fallback",
                        len(structures), before, self._watched_settings())
        energies = output["energy"].detach().to("cpu", torch.float64).numpy()
        forces = output["forces"].detach().to("cpu", torch.float64).numpy()
        forces = forces.reshape(len(structures), len(self._template), 3)
        stresses = output.get("stress")
        if stresses is not None:
            stresses = stresses.detach().to("cpu", torch.float64).numpy().reshape(-1, 3, 3)
        return [Prediction(energy=float(energies[index]), forces=forces[index],
                           stress=stresses[index] if stresses is not None
                           and bool(np.all(structure.pbc)) else None)
                for index, structure in enumerate(structures)]

    def device_memory_bytes(self) -> int | None:
        if self._device.type != "cuda":
            return None
        return int(torch.cuda.max_memory_allocated(self._device))

    def _data(self, structure: Structure) -> Any:
        """fairchem's ``AtomicData`` for one structure, built as its ASE calculator builds it."""
        atoms = self._template.copy()
        atoms.positions = structure.positions
        atoms.set_cell(structure.cell)
        atoms.pbc = structure.pbc
        settings = self.unit.inference_settings
        external = bool(settings.external_graph_gen)
        return self._atomic_data.from_ase(
            atoms, task_name=self._task, r_edges=external, radius=_RADIUS,
            max_neigh=_EXTERNAL_MAX_NEIGHBORS if external else None,
            r_data_keys=["spin", "charge"], target_dtype=settings.base_precision_dtype)

    def _watched_settings(self) -> dict[str, object]:
        settings = self.unit.inference_settings
        return {field: getattr(settings, field) for field in _FALLBACK_FIELDS}


def _on(device: torch.device) -> contextlib.AbstractContextManager:
    """fairchem places work on torch's current CUDA device: make it ``device``
    for the duration (no change for the CPU or a plain ``cuda``)."""
    if device.type == "cuda" and device.index is not None:
        return torch.cuda.device(device.index)
    return contextlib.nullcontext()
