"""Helpers for checking a umadrive setup: shipped so users can run the same
checks on their own machines and models.

``TOLERANCES`` is the one table of numerical tolerances that every umadrive test
uses; pick the row for the floating-point precision a computation ran in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    """Absolute tolerances for one precision.

    energy_per_atom: eV/atom.
    forces: eV/Å, per component.
    stress: eV/Å³, per component.
    """

    energy_per_atom: float
    forces: float
    stress: float


TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(energy_per_atom=1e-8, forces=1e-7, stress=1e-8),
    "float32": Tolerance(energy_per_atom=1e-4, forces=1e-3, stress=1e-4),
    # float64 values compared with what an engine printed with 8 decimals (ASE's
    # extxyz writer, used by i-PI's trajectories): 5e-9 Å position rounding
    # moves forces by up to ~1e-7 eV/Å.
    "printed": Tolerance(energy_per_atom=1e-8, forces=1e-6, stress=1e-8),
}


# Relative agreement to expect between quantities converted with an MD engine's own
# unit constants (LAMMPS's nktv2p, ftm2v, its kcal/mol; i-PI's Hartree) and the same
# quantities converted with ase.units: those constants differ in the 7th-8th digit.
ENGINE_CONSTANTS_RTOL = 1e-6


def tolerance(dtype: object) -> Tolerance:
    """The tolerance row for ``dtype`` (a torch or numpy dtype, or its name, or
    ``"printed"``)."""
    name = str(dtype).rsplit(".", 1)[-1]
    try:
        return TOLERANCES[name]
    except KeyError:
        raise ValueError(
            f"no tolerance for dtype {dtype!r}; known: {sorted(TOLERANCES)}"
        ) from None
