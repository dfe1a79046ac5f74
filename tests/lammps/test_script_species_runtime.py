"""The bridge's pure parts (script split, element recognition, box to cell) and the
MPI library loading, without a model server."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from ase.calculators.lammps import Prism
from ase.data import atomic_masses, atomic_numbers

from umadrive.lammps.errors import LammpsInputError
from umadrive.lammps.script import split_script
from umadrive.lammps.species import element_of_mass, type_elements
from umadrive.lammps.system import box_cell

SCRIPT = """\
units metal   # comment with run in it
fix umadrive all &
    external pf/callback 1 1
variable a loop 2
label loop
run 1
next a
jump SELF loop
"""


def test_split_before_the_first_control_flow_command():
    script = split_script(SCRIPT)
    assert script.setup + script.dynamics == SCRIPT
    assert script.dynamics.startswith("label loop")
    assert script.split_line == 5
    fix = script.external_fix
    assert (fix.fix_id, fix.group, fix.mode, fix.args, fix.line) == ("umadrive", "all", "pf/callback", ("1", "1"), 2)


def test_a_script_without_runs_is_all_setup():
    script = split_script("units metal\nread_data x.data\n")
    assert (script.dynamics, script.split_line, script.external_fix) == ("", None, None)


def test_two_external_fixes_are_refused():
    with pytest.raises(LammpsInputError, match="2 `fix external` commands"):
        split_script("fix a all external pf/callback 1 1\nfix b all external pf/callback 1 1\nrun 1\n")


@pytest.mark.parametrize("symbol", ["H", "C", "O", "Cu", "Au", "Pt", "U"])
def test_standard_masses_give_their_element(symbol):
    assert element_of_mass(1, float(atomic_masses[atomic_numbers[symbol]]) + 0.05) == symbol


def test_types_given_by_name_win_over_masses():
    assert type_elements([2.014, 15.999], ["H", "O"]) == ["H", "O"]  # deuterium
    with pytest.raises(LammpsInputError, match="type 2 has mass 2.014"):
        type_elements([15.999, 2.014], None)


def test_box_cell_matches_ase_prism():
    # ASE's own LAMMPS conversion: a general cell -> LAMMPS box (xhi, yhi, zhi, xy, xz, yz).
    cell = np.array([[4.0, 0.3, -0.2], [1.1, 3.7, 0.4], [-0.6, 0.9, 5.2]])
    xhi, yhi, zhi, xy, xz, yz = Prism(cell).get_lammps_prism()
    lammps_cell, pbc = box_cell([0.0] * 3, [xhi, yhi, zhi], xy, yz, xz, [1, 1, 1])
    assert pbc.all()
    np.testing.assert_allclose(lammps_cell @ lammps_cell.T, cell @ cell.T, rtol=0, atol=1e-12)  # same lattice
    _, pbc = box_cell([0.0] * 3, [1.0] * 3, 0.0, 0.0, 0.0, [1, 1, 0])
    assert pbc.tolist() == [True, True, False]


def test_lammps_loads_without_ld_library_path():
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    code = (
        "from umadrive.lammps.mpich_runtime import import_lammps\n"
        "lmp = import_lammps().lammps(cmdargs=['-log', 'none', '-screen', 'none'])\n"
        "print(lmp.has_style('fix', 'external'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
