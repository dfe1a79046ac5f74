"""i-PI users' habits: ``umadrive serve`` takes i-pi-py_driver's short options
(-u, -a, -p, -S, -m) with its meanings, and ``i-pi-py_driver -m custom -P``
runs umadrive's PES module; both under real i-PI 3.3, checked against direct
calculations on the structure i-PI started from."""

from __future__ import annotations

import argparse
import subprocess
import sys

import ase.io
import numpy as np
import pytest
from ase.units import Hartree

from tests.driver.conftest import free_port
from tests.peers import console_script
from tests.reference import UMA_S1P1, emt, sheared_copper
from umadrive.commands import serve as serve_command
from umadrive.ipi_input import IpiRun, ipi_input_xml
from umadrive.testing import tolerance


def step0_potential_ev(folder) -> float:
    table = np.loadtxt(folder / "sim.out", ndmin=2)
    assert len(table) == 4  # steps 0..3
    return table[0, 1] * Hartree


def start_structure(folder):
    structure = folder / "start.extxyz"
    ase.io.write(structure, sheared_copper())
    return structure


@pytest.mark.timeout(180)
@pytest.mark.parametrize("style", ["unix", "unix-prefix", "tcp"])
def test_serve_with_py_driver_short_options(processes, tmp_path, socket_name, style):
    structure = start_structure(tmp_path)
    if style == "tcp":
        port = free_port()
        where, short = dict(host="localhost", port=port), ["-a", "localhost", "-p", str(port)]
    elif style == "unix":
        where, short = dict(unix=socket_name), ["-u", "-a", socket_name]
    else:
        prefix = f"/tmp/fh_{socket_name[-6:]}_"
        where, short = dict(unix=socket_name, prefix=prefix), ["-u", "-a", socket_name,
                                                                "-S", prefix]
    run = IpiRun(structure=structure.name, steps=3, ensemble="nve",
                 properties=("step", "potential"), **where)
    ipi = processes.ipi(ipi_input_xml(run))
    serve = processes.serve("-m", "ase:emt", "--structure", str(structure), *short,
                            "--connect-timeout", "60")
    assert processes.wait(ipi) == 0, processes.logs()
    assert processes.wait(serve) == 0, processes.logs()
    assert abs(step0_potential_ev(tmp_path) - emt(sheared_copper()).energy) < 1e-6


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve_command.configure(parser)
    return parser.parse_args(["--model", "ase:emt", "--structure", "x.extxyz", *argv])


def test_short_options_mean_what_py_driver_means():
    address = serve_command.parse_address(parsed("-u", "-a", "abc", "-S", "/tmp/p_"))
    assert address.path == "/tmp/p_abc"
    address = serve_command.parse_address(parsed("-a", "example.org"))
    assert (address.host, address.port) == ("example.org", 12345)  # py_driver's default port
    assert serve_command.parse_address(parsed("-u")).path.endswith("localhost")
    assert parsed("-m", "demo").model == "demo"


@pytest.mark.parametrize("argv, match", [
    (("-u", "-a", "abc", "--unix", "def"), r"-u/-a .* and --unix/--host both give the address"),
    (("-p", "1", "--port", "2"), r"-p 1 and --port 2 both give the port"),
    (("-u", "-a", "abc", "-p", "3"), r"-u makes -a 'abc' a unix socket name.*drop"),
])
def test_conflicting_short_and_long_options_are_refused(argv, match):
    with pytest.raises(ValueError, match=match):
        serve_command.parse_address(parsed(*argv))


def pes_path() -> str:
    return subprocess.run([sys.executable, "-m", "umadrive", "info", "--pes-path"],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("model", ["ase:emt", "uma_s1p1"])
def test_ipi_py_driver_runs_the_umadrive_pes(processes, tmp_path, socket_name, model):
    """Two beads in i-PI's batched protocol: one backend call per step."""
    structure = start_structure(tmp_path)
    run = IpiRun(structure=structure.name, steps=3, ensemble="nvt", nbeads=2, batch_size=2,
                 unix=socket_name, properties=("step", "potential"),
                 trajectories=("positions",))
    ipi = processes.ipi(ipi_input_xml(run))
    spec = "model=ase:emt" if model == "ase:emt" else f"model={UMA_S1P1},task=omat"
    driver = processes.start("py_driver", [
        console_script("i-pi-py_driver"), "-u", "-a", socket_name, "-m", "custom",
        "-P", pes_path(), "-o", f"template={structure},{spec}"])
    assert processes.wait(ipi) == 0, processes.logs()
    assert processes.wait(driver) == 0, processes.logs()
    # i-PI's potential at step 0 is the mean over the beads of their energies
    beads = [ase.io.read(tmp_path / f"sim.positions_{b}.extxyz", index=0) for b in range(2)]
    if model == "ase:emt":
        answers = [emt(atoms) for atoms in beads]
        expected = np.mean([answer.energy for answer in answers])
        # the trajectory's positions are printed to 1e-8 Å: the energy there moves by
        # up to sum |F| * 5e-9 Å
        rounding = max(np.abs(answer.forces).sum() for answer in answers) * 5e-9
        assert abs(step0_potential_ev(tmp_path) - expected) <= rounding + 1e-9
    else:
        from umadrive import UMACalculator, get_predict_unit

        calc = UMACalculator(get_predict_unit(UMA_S1P1), task_name="omat")
        expected = np.mean([calc.get_potential_energy(atoms) for atoms in beads])
        assert abs(step0_potential_ev(tmp_path) - expected) <= \
            tolerance("float32").energy_per_atom * len(beads[0])
