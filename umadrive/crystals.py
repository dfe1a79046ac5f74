"""Ordered fcc Cu3Au (L1_2), the alloy the demo, ``umadrive bench``, the
benchmarks and the tests are built on: one builder for all of them."""

from __future__ import annotations

import ase
from ase.build import bulk

LATTICE_CU3AU = 3.75  # Å, the cubic cell of L1_2 Cu3Au


def cu3au(repeat: tuple[int, int, int] = (1, 1, 1)) -> ase.Atoms:
    """L1_2 Cu3Au: the cubic fcc cell (a = :data:`LATTICE_CU3AU` Å, 4 atoms)
    with Au at the corner and Cu on the faces, repeated ``repeat`` times."""
    crystal = bulk("Cu", "fcc", a=LATTICE_CU3AU, cubic=True)
    crystal.numbers[0] = 79  # Au
    return crystal.repeat(repeat)
