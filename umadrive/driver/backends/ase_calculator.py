"""The ASE backend: any ASE calculator answering the driver's structures."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence

import ase
import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError
from ase.stress import voigt_6_to_full_3x3_stress

from umadrive.structure import Prediction, Structure

log = logging.getLogger("umadrive.driver")


class AseBackend:
    """Any ASE calculator. Stress is asked for when a structure is periodic in
    all three directions; a calculator that has none gets a zero virial on the
    wire, marked as no stress in the extras (with a warning, since NPT then goes
    wrong; the LAMMPS bridge refuses it)."""

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


def ase_calculator(target: str, kwargs: dict) -> Calculator:
    """``ase:TARGET``: ``emt`` or ``package.module:Class``, built with ``kwargs``."""
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
