"""A stop signal ends ``umadrive serve`` within a bounded time wherever it
arrives: idle, in the middle of a message the server left half sent, in the
middle of a computation (``--stop-grace``, or a second signal). A hand-written
server injects the faults a real one cannot; nothing is sent after the
handshake, and the server sees a clean end of stream, never a reset."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import time

import ase.io
import pytest
from ase.build import bulk

from tests.driver.faults import posdata
from umadrive.driver.lifecycle import FORCED_EXIT_STATUS
from umadrive.protocol.addresses import DEFAULT_PREFIX
from umadrive.protocol.messages import STOP_PATIENCE_S

BOUND_S = 30  # every wait on the driver
COPPER = bulk("Cu", "fcc", a=3.6, cubic=True)


class FaultServer:
    """A listening unix socket that accepts ``umadrive serve`` and hand-shakes."""

    def __init__(self, socket_name: str) -> None:
        self.path = DEFAULT_PREFIX + socket_name
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(self.path)
        self.listener.listen(1)
        self.listener.settimeout(BOUND_S)
        self.conn: socket.socket | None = None

    def handshake(self) -> socket.socket:
        conn, _ = self.listener.accept()
        conn.settimeout(BOUND_S)
        conn.sendall(b"STATUS      ")
        assert conn.recv(12) == b"NEEDINIT    "
        conn.sendall(b"INIT        " + struct.pack("=ii", 0, 1) + b" ")
        conn.sendall(b"STATUS      ")
        assert conn.recv(12) == b"READY       "
        self.conn = conn
        return conn

    def rest(self) -> bytes:
        """What the driver sends until it closes; a reset fails the test (it
        kills i-PI 3.3's polling thread)."""
        received = b""
        while chunk := self.conn.recv(4096):
            received += chunk
        return received

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()
        os.unlink(self.path)


@pytest.fixture
def server(socket_name):
    started = FaultServer(socket_name)
    yield started
    started.close()


def write_template(tmp_path):
    template = tmp_path / "copper.extxyz"
    ase.io.write(template, COPPER)
    return template


def stop_and_wait(process, signals: list[signal.Signals]) -> tuple[int, float]:
    """Sends ``signals`` (0.2 s apart) and returns the exit status and the
    seconds from the first signal to the exit."""
    start = time.monotonic()
    for number in signals:
        process.send_signal(number)
        time.sleep(0.2)
    status = process.wait(BOUND_S)
    return status, time.monotonic() - start


FAULTS = {
    "idle": b"",
    "half a header": b"STAT",  # then silence
    "half a POSDATA": posdata(COPPER)[:12 + 5 * 8],  # the header and 5 of 18 cell numbers
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_while_waiting_or_mid_read_ends_the_driver_at_once(
        processes, tmp_path, socket_name, server, fault, sig):
    serve = processes.serve("--model", "ase:emt", "--structure", str(write_template(tmp_path)),
                            "--unix", socket_name)
    conn = server.handshake()
    conn.sendall(FAULTS[fault])
    time.sleep(0.5)  # the driver now waits for the rest
    status, seconds = stop_and_wait(serve, [sig])
    log = (tmp_path / "serve.log").read_text()
    assert status == 0, log
    assert seconds < STOP_PATIENCE_S + 10, seconds  # bounded: no wait for the server to close
    assert server.rest() == b"", log  # nothing sent, clean end of stream
    assert f"{sig.name} received: finishing the request in flight" in log
    if fault != "idle":
        assert f"while stopping ({sig.name}); closing without answering" in log, log
    assert f"stopped by {sig.name} after 0 requests" in log, log
    assert "ERROR" not in log, log


def slow_model(tmp_path, delay: float) -> list[str]:
    kwargs = {"marker": str(tmp_path / "computing"), "delay": delay}
    return ["--model", "ase:tests.driver.slow_calculator:SlowEMT",
            "--model-kwargs", json.dumps(kwargs)]


def wait_for_marker(path, processes) -> None:
    deadline = time.monotonic() + BOUND_S
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"the computation never started:\n{processes.logs()}")
        time.sleep(0.05)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["grace", "second signal"])
def test_a_computation_that_outlasts_the_stop_ends_without_an_answer(
        processes, tmp_path, socket_name, server, test_env, how):
    """SlowEMT sleeps 600 s: the watchdog ends the process after the grace (1 s)
    or at the second signal, closing the connection cleanly (the GETFORCE
    already sent is drained, so the server sees an end of stream, not a reset)."""
    grace = ["--stop-grace", "1"] if how == "grace" else ["--stop-grace", "inf"]
    serve = processes.serve(*slow_model(tmp_path, 600), "--structure",
                            str(write_template(tmp_path)), "--unix", socket_name, *grace, env=test_env)
    conn = server.handshake()
    conn.sendall(posdata(COPPER))
    wait_for_marker(tmp_path / "computing", processes)
    signals = [signal.SIGTERM] if how == "grace" else [signal.SIGTERM, signal.SIGTERM]
    status, seconds = stop_and_wait(serve, signals)
    log = (tmp_path / "serve.log").read_text()
    assert status == FORCED_EXIT_STATUS == 3, log
    assert seconds < 10, seconds  # far less than the computation
    assert server.rest() == b"", log  # no answer, clean end of stream
    expected = ("the request in flight did not end within the 1 s grace after SIGTERM"
                if how == "grace" else "a second stop signal (SIGTERM)")
    assert f"{expected}: closing the connections without answering and exiting with status 3" \
        in log, log

