"""LAMMPS input scripts the bridge tests share."""

from __future__ import annotations


def one_copper_cell(steps: int, *, thermo: int | None = None) -> str:
    """One fcc Cu cell (a = 3.61 Å, 4 atoms), forces from ``fix external``
    (umadrive), NVE for ``steps`` steps; ``thermo``: print every that many."""
    thermo_line = f"thermo          {thermo}\n" if thermo is not None else ""
    return f"""
units           metal
atom_style      atomic
lattice         fcc 3.61
region          box block 0 1 0 1 0 1
create_box      1 box
create_atoms    1 box
mass            1 63.546
pair_style      zero 6.0
pair_coeff      * *
fix             umadrive all external pf/callback 1 1
fix             md all nve
{thermo_line}run             {steps}
"""
