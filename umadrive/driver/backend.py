"""What computes the answers: a :class:`Backend` turns structures into
predictions. ``make_backend`` maps a ``--model`` spec to one.

Specs: a UMA checkpoint path or model name (:mod:`umadrive.driver.uma_backend`),
``ase:emt`` (ASE's EMT) and ``ase:package.module:Class`` (any ASE calculator,
built with the keyword arguments given).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import ase
import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError
from ase.stress import voigt_6_to_full_3x3_stress

from umadrive.structure import Prediction, Structure

log = logging.getLogger("umadrive.driver")


class Backend(Protocol):
    """Computes predictions; the species and atom order are those of the
    template the backend was built with."""

    name: str

    def compute(self, structures: Sequence[Structure]) -> list[Prediction]:
        """One prediction per structure (eV, eV/Å, eV/Å³), all in one call."""
        ...

    def device_memory_bytes(self) -> int | None:
        """Memory the backend holds on its accelerator; None on the CPU."""
        ...


@dataclass(frozen=True)
class UmaOptions:
    """How a UMA model is loaded and asked (``umadrive serve`` flags).

    task: the model dataset to predict for (``omat``, ``omol``, ...); None is
        allowed when the model has only one.
    charge: total charge (e). spin: spin multiplicity; None means 1 for
        ``omol`` and 0 (unset) otherwise, as fairchem's calculator does.
    mode: ``default``, ``turbo`` or the path of a JSON file of
        :class:`~umadrive.model.settings.InferenceSettings` fields.
    device: ``cpu``, ``cuda`` or ``cuda:N``.
    """

    task: str | None = None
    charge: int = 0
    spin: int | None = None
    mode: str = "default"
    device: str = "cpu"


class AseBackend:
    """Any ASE calculator. Stress is asked for when a structure is periodic in
    all three directions; a calculator that has none gets a zero virial on the
    wire (with a warning, since NPT then goes wrong)."""

    def __init__(self, calculator: Calculator, template: ase.Atoms, *, name: str) -> None:
        self.name = name
        self._atoms = template.copy()
        self._atoms.calc = calculator
        self._has_stress = True

    def compute(self, structures: Sequence[Structure]) -> list[Prediction]:
        return [self._compute_one(structure) for structure in structures]

    def device_memory_bytes(self) -> None:
        return None

    def _compute_one(self, structure: Structure) -> Prediction:
        atoms = self._atoms
        atoms.set_cell(structure.cell, scale_atoms=False)
        atoms.pbc = structure.pbc
        atoms.positions = structure.positions
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        stress = None
        if self._has_stress and bool(np.all(structure.pbc)):
            try:
                stress = voigt_6_to_full_3x3_stress(atoms.get_stress())
            except PropertyNotImplementedError:
                self._has_stress = False
                log.warning("%s computes no stress: the virial is sent as zero "
                            "(constant-pressure runs will be wrong)", self.name)
        return Prediction(energy=float(energy), forces=np.array(forces), stress=stress)


def make_backend(spec: str, template: ase.Atoms, *, uma: UmaOptions | None = None,
                 **calculator_kwargs: object) -> Backend:
    """The backend for a ``--model`` spec: ``ase:...`` builds an ASE calculator
    with ``calculator_kwargs``; anything else is a UMA checkpoint path or model
    name, loaded with ``uma`` (defaults: :class:`UmaOptions`)."""
    kind, _, rest = spec.partition(":")
    if kind == "ase":
        if not rest:
            raise ValueError(f"--model {spec!r}: expected 'ase:emt' or 'ase:package.module:Class'")
        return AseBackend(_ase_calculator(rest, calculator_kwargs), template, name=spec)
    if calculator_kwargs:
        raise ValueError(f"--model-kwargs {calculator_kwargs} apply to ASE calculators only "
                         f"('ase:...'), not to the UMA model {spec!r}")
    from umadrive.driver.uma_backend import UmaBackend

    return UmaBackend.load(spec, template, uma or UmaOptions())


def _ase_calculator(target: str, kwargs: dict) -> Calculator:
    if target == "emt":
        from ase.calculators.emt import EMT

        return EMT(**kwargs)
    module_name, _, class_name = target.rpartition(":")
    if not module_name or not class_name:
        raise ValueError(
            f"--model 'ase:{target}': expected 'ase:emt' or 'ase:package.module:Class'"
        )
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(
            f"--model 'ase:{target}': cannot load {class_name} from {module_name} ({error}); "
            "check the module is installed and the class name"
        ) from error
    return cls(**kwargs)
