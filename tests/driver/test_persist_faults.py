"""``--persist --connections 8`` across i-PI runs in a row (issue 11: after
EXIT, a reconnect reached the dying i-PI and the driver exited 1 with "expected
a listening server within 0 s" / FileNotFoundError / ConnectionRefusedError),
and a refused run retried quietly: one error and one line about retrying, not
the same error every 2 s."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time

import pytest

from tests.driver.pimd import NBEADS, STEPS, assert_every_bead_matches_emt, pimd_input
from tests.driver.threads import ServeThread
from tests.peers import console_script, one_thread_env
from tests.reference import cu3au_32
from umadrive.driver import ServeOptions, make_backend
from umadrive.ipi_input import IpiRun, ipi_input_xml
from umadrive.protocol.addresses import DEFAULT_PREFIX, Address

RUNS = 4
BOUND_S = 60


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.timeout(400)
def test_persist_with_eight_connections_serves_runs_in_a_row_and_backs_off_quietly(
        processes, tmp_path, socket_name):
    import ase.io

    ase.io.write(tmp_path / "alloy.extxyz", cu3au_32())
    serve = processes.serve("--model", "ase:emt", "--structure", str(tmp_path / "alloy.extxyz"),
                            "--unix", socket_name, "--persist", "--connections", str(NBEADS),
                            "--log-json", str(tmp_path / "serve.jsonl"), env=one_thread_env())
    for index in range(RUNS):  # each i-PI starts as soon as the one before has ended
        folder = tmp_path / f"run{index}"
        folder.mkdir()
        (folder / "input.xml").write_text(pimd_input(folder, unix=socket_name))
        ipi = processes.start(f"ipi{index}", [console_script("i-pi"), "input.xml"], cwd=folder)
        assert processes.wait(ipi) == 0, processes.logs()
        assert_every_bead_matches_emt(folder)
        assert serve.poll() is None, processes.logs()  # no spurious exit between runs
    log = (tmp_path / "serve.log").read_text()
    assert "ERROR" not in log, log
    ends = [r for r in records(tmp_path / "serve.jsonl") if r["event"] == "run_end"]
    served = [r for r in ends if r["requests"] > 0]
    assert [r["outcome"] for r in served] == ["EXIT"] * RUNS, ends
    assert [r["requests"] for r in served] == [NBEADS * (STEPS + 1)] * RUNS, ends

    # a run of another atom count: refused, retried with growing pauses, said once
    other = tmp_path / "other"
    other.mkdir()
    ase.io.write(other / "small.extxyz", cu3au_32()[:4])
    (other / "input.xml").write_text(ipi_input_xml(IpiRun(
        structure="small.extxyz", unix=socket_name, ensemble="nve", steps=2)))
    processes.start("ipi_other", [console_script("i-pi"), "input.xml"], cwd=other)
    deadline = time.monotonic() + BOUND_S
    while sum(r["event"] == "run_end" and r["outcome"] == "failed"
              for r in records(tmp_path / "serve.jsonl")) < 4:  # four tries so far
        assert time.monotonic() < deadline, processes.logs()
        time.sleep(0.2)
    serve.send_signal(signal.SIGTERM)
    assert processes.wait(serve) == 0, processes.logs()
    log = (tmp_path / "serve.log").read_text()
    refusal = "nat=32 atoms, the template's count"
    assert sum(refusal in line for line in log.splitlines()) == 1, log
    assert log.count("the same failure again: retrying with pauses growing to 8 s") == 1, log
    assert log.count("gave up on the server") == 1, log  # the run_end line, once too
    tries = [r for r in records(tmp_path / "serve.jsonl")
             if r["event"] == "run_end" and r["outcome"] == "failed"]
    assert len(tries) >= 4 and all(r["requests"] == 0 for r in tries)
    rows = [line for line in (other / "sim.out").read_text().splitlines()
            if not line.startswith("#")]
    assert rows == []  # nothing was computed for it


def _listen(path: str) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(8)
    listener.settimeout(BOUND_S)
    return listener


def _accept(listener: socket.socket) -> socket.socket:
    conn, _ = listener.accept()
    conn.settimeout(BOUND_S)
    return conn


def _handshake(conn: socket.socket) -> socket.socket:
    conn.sendall(b"STATUS      ")
    assert conn.recv(12) == b"NEEDINIT    "
    return conn


@pytest.mark.timeout(120)
def test_a_server_that_goes_away_between_connections_counts_as_none(socket_name, caplog):
    """The race of issue 11, made deterministic: the first connection reaches a
    server that then removes its socket (an i-PI ending after EXIT), so the
    second finds no socket file. The driver must wait for the next server, not
    exit 1 with "expected a listening server within 0 s"."""
    caplog.set_level(logging.INFO)
    path = DEFAULT_PREFIX + socket_name
    dying = _listen(path)
    driver = ServeThread(make_backend("ase:emt", cu3au_32()), cu3au_32(), Address(path=path),
                         ServeOptions(connections=2, connect_timeout_s=BOUND_S))
    first = _accept(dying)
    dying.close()
    os.unlink(path)  # the second connection finds nothing
    _handshake(first).close()
    deadline = time.monotonic() + BOUND_S
    while "waiting for a server at" not in caplog.text:  # the second connection found none
        assert time.monotonic() < deadline and driver.status is None, caplog.text
        time.sleep(0.01)
    fresh = _listen(path)
    try:
        conns = [_handshake(_accept(fresh)) for _ in range(2)]  # the driver came back for both
        for conn in conns:
            conn.sendall(b"EXIT        ")
        assert driver.join(BOUND_S) == 0, caplog.text
    finally:
        fresh.close()
        os.unlink(path)
    assert "ERROR" not in caplog.text and "within 0 s" not in caplog.text, caplog.text
    assert "the server sent EXIT after 0 requests" in caplog.text
