"""Real i-PI 3.3 runs served by ``umadrive serve --model ase:emt``: what i-PI
printed (full precision, atomic units) equals direct EMT on the positions and
cell i-PI printed."""

from __future__ import annotations

import sys

import ase.io
import numpy as np
import pytest
from ase.units import Hartree

from tests.driver.conftest import free_port
from tests.reference import emt, sheared_copper
from umadrive.ipi_input import IpiRun, ipi_input_xml
from umadrive.testing import tolerance

TOL = tolerance("float64")


def read_frames(path) -> list:
    """i-PI's ASE-format trajectory: Å, converted by i-PI with ase.units as the
    driver converts what it receives (printed to 1e-8 Å by ASE's writer)."""
    return ase.io.read(path, index=":")


def run_ipi(processes, tmp_path, socket_name, *, transport="unix", **run_options):
    structure = tmp_path / "start.extxyz"
    ase.io.write(structure, sheared_copper())
    if transport == "unix":
        address = {"unix": socket_name}
        serve_address = ["--unix", socket_name]
    else:
        port = free_port()
        address = {"host": "localhost", "port": port}
        serve_address = ["--host", "localhost", "--port", str(port)]
    run = IpiRun(structure=structure.name, trajectories=("positions",), **address, **run_options)
    ipi = processes.ipi(ipi_input_xml(run))
    serve = processes.serve("--model", "ase:emt", "--structure", str(structure), *serve_address,
                            "--connect-timeout", "60")
    assert processes.wait(ipi) == 0, processes.logs()
    assert processes.wait(serve) == 0, processes.logs()
    assert "sent EXIT" in (tmp_path / "serve.log").read_text()
    table = np.loadtxt(tmp_path / "sim.out", ndmin=2)
    return run, table


@pytest.mark.timeout(180)
@pytest.mark.parametrize("transport", ["unix", "inet"])
@pytest.mark.parametrize("consolidate", [True, False])
def test_nve_triclinic_potential_matches_direct_emt(processes, tmp_path, socket_name,
                                                    transport, consolidate):
    run, table = run_ipi(processes, tmp_path, socket_name, transport=transport,
                         consolidate=consolidate, ensemble="nve", steps=20, timestep_fs=2.0,
                         properties=("step", "potential", "conserved"))
    frames = read_frames(tmp_path / "sim.positions_0.extxyz")
    assert len(frames) == len(table) == 21
    assert abs(np.linalg.det(frames[0].cell.array) - sheared_copper().get_volume()) < 1e-6
    for (step, potential, _), atoms in zip(table, frames):
        direct = emt(atoms).energy
        assert abs(potential * Hartree - direct) <= TOL.energy_per_atom * len(atoms), step
    # forces drive the dynamics: wrong forces would not conserve the energy
    conserved, potential = table[:, 2], table[:, 1]
    assert np.ptp(potential) > 0
    assert np.ptp(conserved) < 0.02 * np.ptp(potential)


@pytest.mark.timeout(180)
def test_pimd_batched_every_bead_matches_direct_emt(processes, tmp_path, socket_name):
    nbeads = 8
    run, table = run_ipi(processes, tmp_path, socket_name, ensemble="nvt", nbeads=nbeads,
                         batch_size=4, steps=3, properties=("step", "bead_potentials"))
    assert "batched protocol, 4 structures per request" in (tmp_path / "serve.log").read_text()
    beads = [read_frames(tmp_path / f"sim.positions_{b}.extxyz") for b in range(nbeads)]
    assert table.shape == (4, 1 + nbeads)
    for row, step in enumerate(table[:, 0]):
        bead_frames = [frames[row] for frames in beads]
        if row > 0:  # the beads have spread apart: a reply in the wrong order would show
            assert len({round(emt(a).energy, 6) for a in bead_frames}) == nbeads
        for bead, atoms in enumerate(bead_frames):
            got = table[row, 1 + bead] * Hartree
            assert abs(got - emt(atoms).energy) <= TOL.energy_per_atom * len(atoms), (step, bead)


@pytest.mark.timeout(180)
def test_npt_virial_is_minus_stress_times_volume(processes, tmp_path, socket_name):
    run, table = run_ipi(processes, tmp_path, socket_name, ensemble="npt", steps=10,
                         pressure_mpa=5000.0, timestep_fs=2.0,
                         properties=("step", "volume", "virial_md"))
    frames = read_frames(tmp_path / "sim.positions_0.extxyz")
    assert len(frames) == len(table) == 11
    assert np.ptp(table[:, 1]) > 1e-6 * table[0, 1]  # the barostat moved the volume
    for row, atoms in zip(table, frames):
        volume_bohr3 = row[1]
        sent = row[2:] * volume_bohr3 * Hartree  # [xx, yy, zz, xy, xz, yz] eV
        expected = -emt(atoms).stress * atoms.get_volume()
        expected = expected[[0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]]
        np.testing.assert_allclose(sent, expected, rtol=0,
                                   atol=TOL.stress * atoms.get_volume())


@pytest.mark.timeout(180)
def test_refusing_driver_leaves_ipi_able_to_continue(processes, tmp_path, socket_name, test_env):
    """A driver that refuses a request (here: NaN forces) closes with a clean end
    of stream, so i-PI 3.3 drops it and requeues the request instead of hanging;
    a second driver finishes the run."""
    structure = tmp_path / "start.extxyz"
    ase.io.write(structure, sheared_copper())
    ipi = processes.ipi(ipi_input_xml(IpiRun(structure=structure.name, unix=socket_name,
                                             ensemble="nve", steps=3)))
    common = ["--structure", str(structure), "--unix", socket_name]
    refusing = processes.serve("--model", "ase:tests.driver.nan_calculator:NaNCalculator",
                               *common, env=test_env)
    assert processes.wait(refusing) == 1, processes.logs()
    finishing = processes.start("serve2", [sys.executable, "-m", "umadrive", "serve",
                                           "--model", "ase:emt", *common])
    assert processes.wait(finishing) == 0, processes.logs()
    assert processes.wait(ipi) == 0, processes.logs()
    assert len(np.loadtxt(tmp_path / "sim.out", ndmin=2)) == 4
