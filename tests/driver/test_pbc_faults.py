"""A template whose periodicity differs from the cell the engine sends is
refused at the first request, naming both (issue 11: a plain .xyz template, no
cell, while i-PI ran the periodic crystal gave the cluster's energy, far from
the crystal's, without a word); ``--pbc`` says explicitly what to compute."""

from __future__ import annotations

import time

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.socketio import SocketIOCalculator
from ase.units import Hartree

from tests.reference import emt
from umadrive.ipi_input import IpiRun, ipi_input_xml
from umadrive.testing import tolerance

TOL = tolerance("float64")
CRYSTAL = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)  # 32 atoms, 7.2 Å cube
REFUSED = ("the engine sends lattice vectors of lengths 7.2, 7.2, 7.2 Å (pbc TTT), but the "
           "template structure has pbc FFF: computing it would silently give other physics. "
           "Give --structure a template with the engine's cell, or say which directions are "
           "periodic with --pbc (--pbc TTT: as the engine sends it; --pbc FFF: ignore the "
           "engine's cell where the template has none)")


def crystal_run(processes, tmp_path, socket_name):
    """i-PI running the periodic crystal; an .xyz template without a cell."""
    ase.io.write(tmp_path / "crystal.extxyz", CRYSTAL)
    ase.io.write(tmp_path / "template.xyz", CRYSTAL, plain=True)  # the cell is lost
    assert not ase.io.read(tmp_path / "template.xyz").pbc.any()
    ipi = processes.ipi(ipi_input_xml(IpiRun(structure="crystal.extxyz", unix=socket_name,
                                             ensemble="nve", steps=2,
                                             properties=("step", "potential"))))
    return ipi, ["--model", "ase:emt", "--structure", str(tmp_path / "template.xyz"),
                 "--unix", socket_name]


@pytest.mark.timeout(180)
def test_a_cell_less_template_with_a_periodic_ipi_run_is_refused(processes, tmp_path,
                                                                  socket_name):
    ipi, serve_args = crystal_run(processes, tmp_path, socket_name)
    serve = processes.serve(*serve_args)
    assert processes.wait(serve) == 1, processes.logs()
    log = (tmp_path / "serve.log").read_text()
    assert REFUSED in log, log
    assert "closing" in log and "without answering" in log
    assert "after 0 requests" in log  # nothing was computed
    time.sleep(1.0)  # i-PI would print step 0 as soon as it had forces
    assert ipi.poll() is None  # i-PI waits for a driver that can serve it
    rows = [line for line in (tmp_path / "sim.out").read_text().splitlines()
            if not line.startswith("#")]
    assert rows == []  # and recorded nothing wrong


@pytest.mark.timeout(180)
def test_pbc_flag_computes_the_crystal_the_engine_sends(processes, tmp_path, socket_name):
    ipi, serve_args = crystal_run(processes, tmp_path, socket_name)
    serve = processes.serve(*serve_args, "--pbc", "TTT")
    assert processes.wait(ipi) == 0, processes.logs()
    assert processes.wait(serve) == 0, processes.logs()
    step0 = np.loadtxt(tmp_path / "sim.out", ndmin=2)[0]
    periodic = emt(CRYSTAL).energy
    cluster = CRYSTAL.copy()
    cluster.pbc = False
    assert abs(emt(cluster).energy - periodic) > 10  # what the unchecked run computed
    assert abs(step0[1] * Hartree - periodic) <= TOL.energy_per_atom * len(CRYSTAL)


@pytest.mark.timeout(120)
def test_a_periodic_template_with_a_cell_less_ase_engine_is_refused(processes, tmp_path,
                                                                     socket_name):
    """The reverse: ASE's SocketIOCalculator computing a cluster (no cell) while
    the template is the periodic crystal."""
    ase.io.write(tmp_path / "crystal.extxyz", CRYSTAL)
    cluster = CRYSTAL.copy()
    cluster.pbc = False
    cluster.cell = np.zeros((3, 3))
    with SocketIOCalculator(unixsocket=socket_name, timeout=60) as calc:
        serve = processes.serve("--model", "ase:emt", "--structure",
                                str(tmp_path / "crystal.extxyz"), "--unix", socket_name)
        cluster.calc = calc
        with pytest.raises(OSError):  # the driver closed without answering
            cluster.get_potential_energy()
    assert processes.wait(serve) == 1, processes.logs()
    log = (tmp_path / "serve.log").read_text()
    assert ("the engine sends lattice vectors of lengths 0, 0, 0 Å (pbc FFF), but the template "
            "structure has pbc TTT") in log, log
