"""Units and matrix conventions: the one place where wire values become
:class:`~umadrive.structure.Structure` / :class:`~umadrive.structure.Prediction`
values and back.

Wire (i-PI protocol): lengths in Bohr, the cell ``h`` with the lattice vectors as
**columns** (sent row-major), energies and the virial ``W = -stress * V`` in
Hartree, forces in Hartree/Bohr.
umadrive: lengths in Å, the cell with lattice vectors as **rows**, energies in eV,
forces in eV/Å, stress in eV/Å³ (tension positive).
Constants come from :mod:`ase.units`.
"""

from __future__ import annotations

import numpy as np
from ase.units import Bohr, Hartree

from umadrive.structure import Prediction, Structure, virial as stress_virial

_FORCE_TO_WIRE = Bohr / Hartree  # eV/Å -> Hartree/Bohr

NO_STRESS_EXTRA = "no_stress"
"""The extras key (value ``true``) a driver sends with the zero virial of a
periodic structure whose prediction has no stress: the wire always carries a
virial, so without it a zero sent for "none" would read as a true zero."""


def structure_from_wire(h: np.ndarray, positions: np.ndarray) -> Structure:
    """h: (3, 3) Bohr, lattice vectors as columns; positions: (n, 3) Bohr.

    A lattice vector that is all zero marks a non-periodic direction (an all-zero
    ``h`` is a molecule)."""
    cell = np.array(h, dtype=np.float64).reshape(3, 3).T * Bohr
    pbc = np.any(cell != 0.0, axis=1)
    return Structure(
        positions=np.array(positions, dtype=np.float64).reshape(-1, 3) * Bohr,
        cell=cell,
        pbc=pbc,
    )


def structure_to_wire(structure: Structure) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns ``(h, ih, positions)``: h (3, 3) Bohr with lattice vectors as
    columns, its (pseudo-)inverse ih (3, 3) 1/Bohr, positions (n, 3) Bohr, all
    float64 and C-contiguous. Non-periodic directions are sent as zero vectors."""
    cell = np.where(np.asarray(structure.pbc)[:, None], structure.cell, 0.0)
    h = np.ascontiguousarray(cell.T / Bohr, dtype=np.float64)
    ih = np.ascontiguousarray(np.linalg.pinv(h), dtype=np.float64)
    positions = np.ascontiguousarray(structure.positions / Bohr, dtype=np.float64)
    return h, ih, positions


def prediction_to_wire(
    prediction: Prediction, structure: Structure
) -> tuple[float, np.ndarray, np.ndarray]:
    """Returns ``(energy Hartree, forces (n, 3) Hartree/Bohr, virial (3, 3) Hartree)``.

    The virial is :func:`~umadrive.structure.virial` of the structure's volume; it is zero
    when the prediction has no stress (a structure not periodic in 3D)."""
    energy = float(prediction.energy) / Hartree
    forces = np.asarray(prediction.forces, dtype=np.float64) * _FORCE_TO_WIRE
    if prediction.stress is None:
        virial = np.zeros((3, 3))
    else:
        virial = stress_virial(prediction.stress, structure.volume) / Hartree
    return energy, forces, virial


def prediction_from_wire(
    energy: float, forces: np.ndarray, virial: np.ndarray, structure: Structure,
    extras: dict | None = None,
) -> Prediction:
    """energy: Hartree; forces: (n, 3) Hartree/Bohr; virial: (3, 3) Hartree.

    The stress is the inverse of :func:`~umadrive.structure.virial` (eV/Å³) when
    the structure has a volume (periodic in all three directions) and the driver
    computed one, else None: ``extras`` marked :data:`NO_STRESS_EXTRA` say the
    virial is a stand-in zero (the mark is removed from the extras returned)."""
    volume = structure.volume
    stress = None
    if extras is not None and extras.get(NO_STRESS_EXTRA) is True:
        extras = {key: value for key, value in extras.items() if key != NO_STRESS_EXTRA} or None
    elif volume > 0.0:
        stress = -np.asarray(virial, dtype=np.float64).reshape(3, 3) * Hartree / volume
    return Prediction(
        energy=float(energy) * Hartree,
        forces=np.asarray(forces, dtype=np.float64).reshape(-1, 3) / _FORCE_TO_WIRE,
        stress=stress,
        extras=extras,
    )
