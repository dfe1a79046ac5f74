"""A model without stress never reaches LAMMPS as a zero virial unannounced
(issue 11): for a periodic box the driver marks its stand-in zero on the wire,
and ``umadrive lammps`` stops before the first step unless ``--allow-no-stress``
says a zero virial is wanted."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.lammps.conftest import PEER_TIMEOUT_S, thermo_rows

SCRIPT = """
units           metal
atom_style      atomic
lattice         fcc 3.61
region          box block 0 2 0 2 0 2
create_box      1 box
create_atoms    1 box
mass            1 63.546
velocity        all create 300 4242
pair_style      zero 6.0
pair_coeff      * *
fix             umadrive all external pf/callback 1 1
fix             md all nve
thermo          1
thermo_style    custom step pe press
run             3
"""
NO_STRESS = "ase:tests.lammps.no_stress_calculator:NoStressEMT"


def run(peers, *bridge_args: str) -> tuple[int, str, int, str]:
    """``umadrive serve`` with NoStressEMT + ``umadrive lammps``, both to the end:
    (bridge status, bridge output, serve status, serve output)."""
    (peers.folder / "in.copper").write_text(SCRIPT)
    subprocess.run([sys.executable, "-m", "umadrive", "lammps", "in.copper", "--write-template",
                    "copper.extxyz", "--log", "none"], cwd=peers.folder, check=True,
                   capture_output=True, timeout=PEER_TIMEOUT_S, env=peers.env)
    name = peers.socket("nostress")
    serve = peers.umadrive("serve", "serve", "--model", NO_STRESS, "--structure", "copper.extxyz",
                           "--unix", name)
    bridge = peers.umadrive("lammps", "lammps", "in.copper", "--unix", name, "--log", "none",
                            *bridge_args)
    status = peers.wait(bridge)
    return status, peers.output(bridge), peers.wait(serve), peers.output(serve)


@pytest.mark.timeout(180)
def test_a_periodic_box_without_stress_stops_lammps_before_any_step(peers):
    status, output, serve_status, serve_output = run(peers)
    assert status == 1, peers.logs()
    assert ("umadrive lammps: error at step 0: the model returned no stress for a periodic box"
            in output), output
    assert "--allow-no-stress" in output
    assert thermo_rows(output) == []  # no step ran with a zero virial
    assert serve_status == 0, serve_output  # the bridge told umadrive serve EXIT
    assert "computes no stress" in serve_output


@pytest.mark.timeout(180)
def test_allow_no_stress_runs_with_a_zero_virial_and_says_so(peers):
    status, output, serve_status, _ = run(peers, "--allow-no-stress")
    assert (status, serve_status) == (0, 0), peers.logs()
    assert "LAMMPS gets a zero virial (--allow-no-stress)" in output
    assert [row["Step"] for row in thermo_rows(output)] == [0, 1, 2, 3]
