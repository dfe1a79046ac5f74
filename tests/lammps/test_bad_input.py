"""Bad LAMMPS input: each case a clear error (exit status 2) that names the value
and the fix, before any MD step runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from ase.build import bulk

from tests.lammps.conftest import PEER_TIMEOUT_S, thermo_rows

GOOD = {
    "units": "units metal",
    "masses": "mass 1 63.546\nmass 2 196.97",
    "fix": "fix umadrive all external pf/callback 1 1",
    "between_runs": "",
}


def script(**changes: str) -> str:
    """32 CuAu atoms, 2 + 2 steps of NVE; ``changes`` replace parts of GOOD."""
    part = {**GOOD, **changes}
    return f"""
{part["units"]}
atom_style      atomic
lattice         fcc 3.85
region          box block 0 2 0 2 0 2
create_box      2 box
create_atoms    1 box
{part["masses"]}
set             type 1 type/fraction 2 0.5 4242
pair_style      zero 6.0
pair_coeff      * *
{part["fix"]}
fix             md all nve
thermo          1
run             2
{part["between_runs"]}
run             2
"""


def bridge(folder, text: str, *args: str) -> subprocess.CompletedProcess:
    (folder / "in.bad").write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "umadrive", "lammps", "in.bad", "--log", "none", *args],
        cwd=folder, capture_output=True, text=True, timeout=PEER_TIMEOUT_S,
    )


CASES = {
    "lj units": (dict(units="units lj"), [], ["`units lj`", "supported: metal, real"]),
    "unknown mass": (dict(masses="mass 1 63.546\nmass 2 1000.0"), [], ["type 2 has mass 1000", "--types"]),
    "ambiguous mass": (dict(masses="mass 1 63.546\nmass 2 40.01"), [], ["several elements (Ar, Ca)", "--types"]),
    "too few --types": ({}, ["--types", "Cu"], ["type 2 has no element"]),
    "no element symbol": ({}, ["--types", "Cu,Xx"], ["'Xx'", "no element symbol"]),
    "no fix external": (dict(fix=""), [], ["no `fix ... external`", "fix umadrive all external pf/callback 1 1"]),
    "fix external not every step": (
        dict(fix="fix umadrive all external pf/callback 10 1"), [], ["at every step", "pf/callback 1 1"]
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_refused_before_any_step(tmp_path, socket_name, case):
    changes, args, phrases = CASES[case]
    done = bridge(tmp_path, script(**changes), *args, "--unix", socket_name)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "umadrive lammps: error:" in done.stderr
    for phrase in phrases:
        assert phrase in done.stderr
    assert thermo_rows(done.stdout) == []  # no step ran


def test_missing_address_is_refused(tmp_path):
    done = bridge(tmp_path, script())
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no address" in done.stderr and "--unix NAME" in done.stderr
    assert "LAMMPS" not in done.stdout  # refused before LAMMPS started


def test_template_with_other_species_is_refused(tmp_path, socket_name):
    template = bulk("Au", "fcc", a=3.85, cubic=True).repeat(2)
    template.write(tmp_path / "wrong.extxyz")
    done = bridge(tmp_path, script(), "--unix", socket_name, "--template", "wrong.extxyz")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "wrong.extxyz has Au at position 0 but LAMMPS atom 1 in tag order is Cu" in done.stderr
    assert thermo_rows(done.stdout) == []


@pytest.mark.parametrize(
    "between_runs, phrase",
    [
        ("delete_atoms group all\ncreate_atoms 1 single 0.1 0.1 0.1", "now has 1 atoms but the bridge started with 32"),
        ("set atom 1 type 2", "IDs or types changed"),
    ],
)
def test_changed_atoms_stop_before_the_next_run(peers, between_runs, phrase):
    (peers.folder / "in.bad").write_text(script(between_runs=between_runs))
    subprocess.run(
        [sys.executable, "-m", "umadrive", "lammps", "in.bad", "--write-template", "t.extxyz", "--log", "none"],
        cwd=peers.folder, check=True, capture_output=True, timeout=PEER_TIMEOUT_S,
    )
    status, output, serve_status = peers.run_bridge("in.bad", template="t.extxyz")
    assert status == 2, peers.logs()
    assert phrase in output
    assert [row["Step"] for row in thermo_rows(output)] == [0, 1, 2]  # the second run never started
    assert serve_status == 0  # umadrive serve was told EXIT


def test_a_refusing_server_stops_lammps_before_any_step(peers):
    """umadrive serve refuses a request with another atom count than its template
    (and closes); the bridge must stop LAMMPS, never go on with zero forces."""
    (peers.folder / "in.bad").write_text(script())
    bulk("Cu", "fcc", a=3.85, cubic=True).write(peers.folder / "four.extxyz")
    status, output, serve_status = peers.run_bridge("in.bad", template="four.extxyz")
    assert (status, serve_status) == (1, 1), peers.logs()
    assert "umadrive lammps: error at step 0:" in output
    assert thermo_rows(output) == []
