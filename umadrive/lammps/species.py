"""Which chemical element each LAMMPS atom type stands for.

Either the user names them (``--types Cu,Au``: type 1 is Cu, type 2 is Au) or the
bridge recognises each type's mass (``mass`` command or data file, g/mol = amu)
as the standard atomic mass of exactly one element within ``MASS_TOLERANCE``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ase.data import atomic_masses, chemical_symbols

from umadrive.lammps.errors import LammpsInputError

MASS_TOLERANCE = 0.1  # amu


def parse_type_names(text: str) -> list[str]:
    """``"Cu,Au"`` -> ``["Cu", "Au"]``, each checked to be an element symbol."""
    names = [name.strip() for name in text.split(",")]
    for position, name in enumerate(names, start=1):
        if name not in chemical_symbols[1:]:
            raise LammpsInputError(
                f"--types entry {position} is {name!r}, which is no element symbol; "
                "give one symbol per LAMMPS atom type in type order, e.g. --types Cu,Au"
            )
    return names


def element_of_mass(atom_type: int, mass: float) -> str:
    """The one element whose standard atomic mass is within ``MASS_TOLERANCE`` of
    ``mass`` (amu); LammpsInputError when none or several are."""
    if not mass > 0.0:
        raise LammpsInputError(
            f"LAMMPS atom type {atom_type} has no mass set, so its element is unknown; "
            "set it with `mass` in the input script or name the elements with --types"
        )
    matches = [
        symbol
        for symbol, reference in zip(chemical_symbols[1:], atomic_masses[1:])
        if abs(reference - mass) <= MASS_TOLERANCE
    ]
    if len(matches) != 1:
        found = "no element" if not matches else "several elements (" + ", ".join(matches) + ")"
        raise LammpsInputError(
            f"LAMMPS atom type {atom_type} has mass {mass:g} amu, which matches {found} "
            f"within {MASS_TOLERANCE} amu; name the elements with --types "
            "(one symbol per type, e.g. --types Cu,Au)"
        )
    return matches[0]


def type_elements(masses: Sequence[float], names: Sequence[str] | None) -> list[str]:
    """Element symbol of each atom type, type 1 first.

    masses: (n_types,) amu, type 1 first (0 where unset).
    names: the ``--types`` symbols, or None to recognise the elements by mass.
    """
    n_types = len(masses)
    if names is None:
        return [element_of_mass(atom_type, mass) for atom_type, mass in enumerate(masses, 1)]
    if len(names) != n_types:
        missing = (
            f"type {len(names) + 1} has no element"
            if len(names) < n_types
            else f"{len(names) - n_types} symbol(s) too many"
        )
        raise LammpsInputError(
            f"--types names {len(names)} element(s) but the LAMMPS system has {n_types} atom "
            f"type(s): {missing}; give exactly one symbol per type, in type order"
        )
    return list(names)
