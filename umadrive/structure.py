"""The two values that cross every package boundary: a structure to evaluate and
the prediction made for it.

Conventions (the same everywhere in umadrive; units change only in
:mod:`umadrive.protocol`):

* lengths in Å, energies in eV;
* ``cell`` holds the lattice vectors as **rows** (ASE's convention);
* a lattice vector that is all zero marks a non-periodic direction;
* ``stress`` is the Cauchy stress, tension positive (ASE's sign), eV/Å³, as a
  full symmetric (3, 3) matrix. The virial engines receive is
  ``-stress * volume`` (:func:`virial`).

Only numpy is needed here, so every package may import this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Structure:
    """Positions and cell of one request.

    positions: (n, 3) Å, float64.
    cell: (3, 3) Å, lattice vectors as rows, float64 (all zero when not periodic).
    pbc: (3,) bool, periodicity per lattice direction.
    """

    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray

    @classmethod
    def from_atoms(cls, atoms: Any) -> Structure:
        """The positions, cell and periodicity of an ``ase.Atoms`` (float64 copies)."""
        return cls(positions=np.array(atoms.positions, dtype=np.float64),
                   cell=np.array(atoms.cell.array, dtype=np.float64),
                   pbc=np.array(atoms.pbc, dtype=bool))

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    @property
    def volume(self) -> float:
        """|det cell| in Å³; 0 when any direction is not periodic."""
        if not bool(np.all(self.pbc)):
            return 0.0
        return float(abs(np.linalg.det(self.cell)))


@dataclass(frozen=True)
class Prediction:
    """What a backend computed for one :class:`Structure`.

    energy: eV.
    forces: (n, 3) eV/Å.
    stress: (3, 3) eV/Å³ (tension positive), or None when the structure is not
        periodic in all three directions and the backend defines none.
    extras: JSON-serialisable values a backend may add (never a key ``raw``).
    """

    energy: float
    forces: np.ndarray
    stress: np.ndarray | None = None
    extras: dict | None = None

    def is_finite(self) -> bool:
        """True when energy, forces and stress hold no NaN or infinity."""
        values = [np.asarray(self.energy), self.forces]
        if self.stress is not None:
            values.append(self.stress)
        return all(bool(np.all(np.isfinite(v))) for v in values)


def virial(stress: np.ndarray, volume: float) -> np.ndarray:
    """The (3, 3) virial in eV of a Cauchy ``stress`` (eV/Å³, tension positive)
    in a cell of ``volume`` Å³: ``-stress * volume``."""
    return -np.asarray(stress, dtype=np.float64) * volume
