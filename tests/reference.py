"""Independent references for the protocol and driver tests: direct EMT calls
and the test structures."""

from __future__ import annotations

from pathlib import Path

import ase
import numpy as np
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.stress import voigt_6_to_full_3x3_stress

from umadrive.crystals import cu3au
from umadrive.structure import Prediction, Structure


#: The committed test data (``tests/data/README.md`` says how it was made).
DATA = Path(__file__).resolve().parent / "data"
#: The tiny UMA 1.1 checkpoint the driver tests serve.
UMA_S1P1 = DATA / "uma_s1p1.pt"


def sheared_copper() -> ase.Atoms:
    """32 Cu atoms in a general triclinic cell (not upper triangular), rattled."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    cell = atoms.cell.array.copy()
    cell[0, 1] += 0.3
    cell[1, 0] += 0.7
    cell[2, 0] += 0.4
    cell[2, 1] -= 0.5
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(0.05, seed=1)
    return atoms


def sheared_cu3au(repeat: tuple[int, int, int], shear: tuple[float, float],
                  seed: int) -> ase.Atoms:
    """:func:`umadrive.crystals.cu3au` of ``repeat`` cubic cells, its cell sheared to a
    general triclinic one (``shear`` Å added to cell[1, 0] and cell[2, 1]), rattled."""
    atoms = cu3au(repeat)
    cell = atoms.cell.array.copy()
    cell[1, 0] += shear[0]
    cell[2, 1] += shear[1]
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(0.05, seed=seed)
    return atoms


def cu3au_8() -> ase.Atoms:
    """8 atoms of Cu3Au (L1_2) in a sheared, non-upper-triangular cell, rattled."""
    return sheared_cu3au((2, 1, 1), shear=(0.4, -0.3), seed=4)


def cu3au_32() -> ase.Atoms:
    """32 atoms of Cu3Au (L1_2) in a sheared (triclinic) cell, rattled."""
    return sheared_cu3au((2, 2, 2), shear=(0.5, -0.4), seed=7)


def small_molecule() -> ase.Atoms:
    """A non-periodic molecule of EMT elements (no cell)."""
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.02, seed=2)
    return atoms


def to_structure(atoms: ase.Atoms) -> Structure:
    return Structure.from_atoms(atoms)


def emt(atoms: ase.Atoms) -> Prediction:
    """Direct EMT on a copy of ``atoms`` (stress when periodic in 3D)."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    stress = None
    if atoms.pbc.all():
        stress = voigt_6_to_full_3x3_stress(atoms.get_stress())
    return Prediction(energy=atoms.get_potential_energy(), forces=atoms.get_forces(), stress=stress)


def emt_on(structure: Structure, template: ase.Atoms) -> Prediction:
    atoms = template.copy()
    atoms.set_cell(structure.cell)
    atoms.pbc = structure.pbc
    atoms.positions = structure.positions
    return emt(atoms)


def assert_prediction_close(got: Prediction, want: Prediction, tol, n_atoms: int) -> None:
    assert abs(got.energy - want.energy) <= tol.energy_per_atom * n_atoms
    np.testing.assert_allclose(got.forces, want.forces, rtol=0, atol=tol.forces)
    if want.stress is None:
        assert got.stress is None
    else:
        np.testing.assert_allclose(got.stress, want.stress, rtol=0, atol=tol.stress)
