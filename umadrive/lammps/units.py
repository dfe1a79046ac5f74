"""LAMMPS unit styles the bridge supports and their factors to umadrive's units
(Å, eV). Constants come from :mod:`ase.units`."""

from __future__ import annotations

from dataclasses import dataclass

from ase import units

from umadrive.lammps.errors import LammpsInputError


@dataclass(frozen=True)
class LammpsUnits:
    """One LAMMPS unit style.

    name: the ``units`` keyword.
    length: Å per LAMMPS length unit.
    energy: eV per LAMMPS energy unit (forces: energy / length).
    """

    name: str
    length: float
    energy: float

    @property
    def force(self) -> float:
        """eV/Å per LAMMPS force unit."""
        return self.energy / self.length


UNIT_STYLES: dict[str, LammpsUnits] = {
    "metal": LammpsUnits("metal", length=1.0, energy=1.0),
    "real": LammpsUnits("real", length=1.0, energy=units.kcal / units.mol),
}


def lammps_units(name: str) -> LammpsUnits:
    """The :class:`LammpsUnits` for a LAMMPS ``units`` keyword; LammpsInputError
    for any other style."""
    try:
        return UNIT_STYLES[name]
    except KeyError:
        raise LammpsInputError(
            f"LAMMPS `units {name}` is not supported by the umadrive bridge; "
            f"supported: {', '.join(UNIT_STYLES)}. Put `units metal` (or `units real`) "
            "at the top of the input script."
        ) from None
