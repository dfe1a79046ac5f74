"""The driver embedded in Python: :func:`umadrive.driver.serve` in a thread of
the test process, against a real i-PI 3.3 and against this package's
ForceServer; stopped from another thread with a :class:`StopFlag`."""

from __future__ import annotations

import dataclasses
import json
import logging

import ase.io
import numpy as np
import pytest
from ase.units import Hartree

from tests.driver.threads import ServeThread
from tests.reference import emt, sheared_copper
from umadrive.driver import ServeOptions, ServeOptionsError, StopFlag, make_backend, serve
from umadrive.ipi_input import IpiRun, ipi_input_xml
from umadrive.protocol import ForceServer
from umadrive.protocol.addresses import DEFAULT_PREFIX, Address
from umadrive.structure import Structure
from umadrive.testing import tolerance

TOL = tolerance("float64")
TIMEOUT_S = 60


@pytest.mark.timeout(180)
def test_embedded_driver_serves_real_ipi_and_matches_direct_emt(processes, tmp_path,
                                                                 socket_name):
    atoms = sheared_copper()
    ase.io.write(tmp_path / "start.extxyz", atoms)
    run = IpiRun(structure="start.extxyz", unix=socket_name, ensemble="nve", steps=5,
                 timestep_fs=2.0, properties=("step", "potential"), trajectories=("positions",))
    ipi = processes.ipi(ipi_input_xml(run))
    backend = make_backend("ase:emt", atoms)
    driver = ServeThread(backend, atoms, Address(path=DEFAULT_PREFIX + socket_name),
                         ServeOptions(connect_timeout_s=TIMEOUT_S))
    assert driver.join() == 0
    assert processes.wait(ipi) == 0, processes.logs()
    table = np.loadtxt(tmp_path / "sim.out", ndmin=2)
    frames = ase.io.read(tmp_path / "sim.positions_0.extxyz", index=":")
    assert len(frames) == len(table) == 6
    assert np.ptp(table[:, 1]) > 0  # the atoms moved: each row is a different structure
    for (step, potential), frame in zip(table, frames):
        assert abs(potential * Hartree - emt(frame).energy) <= TOL.energy_per_atom * len(frame), step


class NaNFirst:
    """A backend wrapping ``backend`` that answers the first structure it is ever
    asked for with a NaN energy (which the driver refuses to send)."""

    def __init__(self, backend) -> None:
        self.name = "nan-first"
        self._backend = backend
        self.calls = 0

    def compute(self, structures):
        predictions = self._backend.compute(structures)
        if self.calls == 0:
            predictions[0] = dataclasses.replace(predictions[0], energy=float("nan"))
        self.calls += 1
        return predictions

    def device_memory_bytes(self):
        return None


@pytest.mark.timeout(180)
def test_refused_request_with_two_connections_closes_one_and_the_run_ends_with_1(
        processes, tmp_path, socket_name, caplog):
    """README: with --connections N a refused request closes its connection only;
    the others serve the run to its end, and the status is 1."""
    caplog.set_level(logging.INFO)
    atoms = sheared_copper()
    ase.io.write(tmp_path / "start.extxyz", atoms)
    run = IpiRun(structure="start.extxyz", unix=socket_name, ensemble="nvt", nbeads=2, steps=3,
                 properties=("step", "bead_potentials"))
    ipi = processes.ipi(ipi_input_xml(run))
    backend = NaNFirst(make_backend("ase:emt", atoms))
    driver = ServeThread(backend, atoms, Address(path=DEFAULT_PREFIX + socket_name),
                         ServeOptions(connections=2, connect_timeout_s=TIMEOUT_S))
    assert driver.join() == 1
    assert processes.wait(ipi) == 0, processes.logs()
    assert len(np.loadtxt(tmp_path / "sim.out", ndmin=2)) == 4  # i-PI finished every step
    assert "the prediction holds non-finite values" in caplog.text
    assert "the server sent EXIT" not in caplog.text and "gave up on the server" in caplog.text


@pytest.mark.timeout(120)
def test_embedded_driver_with_warmup_and_json_log(tmp_path, socket_name):
    atoms = sheared_copper()
    options = ServeOptions(warmup=True, log_every=2, log_json=tmp_path / "log.jsonl")
    with ForceServer(unix=socket_name, timeout=TIMEOUT_S) as server:
        driver = ServeThread(make_backend("ase:emt", atoms), atoms,
                             Address(path=DEFAULT_PREFIX + socket_name), options)
        server.accept(timeout=TIMEOUT_S)
        for step in range(3):
            moved = atoms.copy()
            moved.positions += 0.01 * step
            (got,) = server.compute([Structure.from_atoms(moved)])
            assert abs(got.energy - emt(moved).energy) <= TOL.energy_per_atom * len(moved)
    assert driver.join() == 0
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["warmup", "connected", "status", "run_end",
                                             "summary"]
    assert (records[-1]["steps"], records[-1]["requests"]) == (3, 3)


@pytest.mark.timeout(60)
def test_stop_flag_ends_a_persistent_driver_waiting_for_a_server(socket_name):
    atoms = sheared_copper()
    with StopFlag() as stop:
        driver = ServeThread(make_backend("ase:emt", atoms), atoms,
                             Address(path=DEFAULT_PREFIX + socket_name),
                             ServeOptions(persist=True), stop=stop)
        assert not stop.wait(0.3)  # still waiting for a server
        stop.set()
        assert driver.join(timeout=TIMEOUT_S) == 0
        assert stop.is_set()


def test_an_address_that_does_not_fit_the_transport_is_refused_before_connecting():
    atoms = sheared_copper()
    with pytest.raises(ServeOptionsError, match=r"transport='mpi' \(--mpi\) talks to i-PI over "
                                                "MPI: give no address"):
        serve(make_backend("ase:emt", atoms), atoms, Address(path="/tmp/x"),
              ServeOptions(transport="mpi"))


@pytest.mark.parametrize("kwargs, message", [
    (dict(connections=0), r"connections=0 \(--connections\): expected 1 or more"),
    (dict(connections=2.0), r"connections=2.0 \(--connections\): expected an integer"),
    (dict(batch_window_ms=-1), r"batch_window_ms=-1 \(--batch-window\): expected 0 ms or more"),
    (dict(connect_timeout_s=-1), r"connect_timeout_s=-1 \(--connect-timeout\): expected 0 s"),
    (dict(max_atoms=0), r"max_atoms=0 \(--max-atoms\): expected 1 or more"),
    (dict(log_every=-1), r"log_every=-1 \(--log-every\): expected 0 \(no status lines\)"),
    (dict(transport="tcp"), r"transport='tcp': expected one of \('socket', 'shm', 'mpi'\)"),
    (dict(transport="mpi", persist=True), r"\(--mpi --persist\): a driver rank lives"),
])
def test_serve_options_name_the_value_the_limit_and_the_fix(kwargs, message):
    with pytest.raises(ServeOptionsError, match=message):
        ServeOptions(**kwargs)


def test_serve_options_are_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        ServeOptions("socket")
    with pytest.raises(AttributeError):
        ServeOptions().connections = 2
