"""The atoms of a LAMMPS instance as umadrive sees them: tag order, Å, cell rows.

LAMMPS keeps a box ``boxlo, boxhi, xy, xz, yz`` (restricted triclinic: the
lattice vectors are ``a = (lx, 0, 0)``, ``b = (xy, ly, 0)``, ``c = (xz, yz, lz)``)
and atoms in an order of its own; umadrive sends atoms sorted by atom ID (tag), so
that the order is the template's, and the cell as rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from umadrive.lammps.errors import LammpsInputError
from umadrive.lammps.units import LammpsUnits

if TYPE_CHECKING:
    import ase


def box_cell(
    boxlo: Sequence[float],
    boxhi: Sequence[float],
    xy: float,
    yz: float,
    xz: float,
    periodicity: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """Cell (3, 3) as rows, in LAMMPS length units, and pbc (3,) bool of a LAMMPS box.

    A direction LAMMPS does not treat as periodic gets an all-zero lattice vector,
    umadrive's mark of a non-periodic direction.
    """
    lx, ly, lz = (hi - lo for lo, hi in zip(boxlo, boxhi))
    cell = np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]], dtype=np.float64)
    pbc = np.array([bool(p) for p in periodicity])
    cell[~pbc] = 0.0
    return cell, pbc


def lammps_cell(lmp: Any) -> tuple[np.ndarray, np.ndarray]:
    """:func:`box_cell` of a ``lammps.lammps`` instance's current box."""
    boxlo, boxhi, xy, yz, xz, periodicity, _ = lmp.extract_box()
    return box_cell(boxlo, boxhi, xy, yz, xz, periodicity)


@dataclass(frozen=True)
class LammpsSystem:
    """Atoms of a LAMMPS instance in tag order.

    tags: (n,) atom IDs, ascending.
    types: (n,) LAMMPS atom types (1-based).
    symbols: (n,) element symbol per atom.
    positions: (n, 3) Å.
    cell: (3, 3) Å, rows; pbc: (3,) bool.
    """

    tags: np.ndarray
    types: np.ndarray
    symbols: list[str]
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray

    def to_atoms(self) -> ase.Atoms:
        from ase import Atoms

        return Atoms(symbols=self.symbols, positions=self.positions, cell=self.cell, pbc=self.pbc)


def read_system(lmp: Any, units: LammpsUnits, type_symbols: Sequence[str]) -> LammpsSystem:
    """The atoms of a serial LAMMPS instance, sorted by tag.

    type_symbols: element of each atom type, type 1 first.
    """
    if lmp.extract_setting("world_size") != 1:
        raise LammpsInputError(
            f"the umadrive bridge runs LAMMPS on one MPI rank, not "
            f"{lmp.extract_setting('world_size')}; start `umadrive lammps` without mpiexec "
            "(the model server does the heavy work)"
        )
    n_atoms = int(lmp.get_natoms())
    if n_atoms == 0:
        raise LammpsInputError(
            "the LAMMPS system has no atoms before the first run; create them "
            "(create_atoms, read_data) before the first run command"
        )
    tags = np.array(lmp.numpy.extract_atom("id"), dtype=np.int64)
    order = np.argsort(tags, kind="stable")
    types = np.array(lmp.numpy.extract_atom("type"), dtype=np.int64)[order]
    x = np.array(lmp.numpy.extract_atom("x"), dtype=np.float64)[order]
    cell, pbc = lammps_cell(lmp)
    return LammpsSystem(
        tags=tags[order],
        types=types,
        symbols=[type_symbols[t - 1] for t in types],
        positions=x * units.length,
        cell=cell * units.length,
        pbc=pbc,
    )


def type_masses(lmp: Any) -> list[float]:
    """Per-type masses (amu), type 1 first; 0 where unset."""
    n_types = int(lmp.extract_global("ntypes"))
    masses = lmp.numpy.extract_atom("mass")
    if masses is None:
        return [0.0] * n_types
    return [float(m) for m in masses[1 : n_types + 1]]
