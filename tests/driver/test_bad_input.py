"""Fault injection: a hand-written misbehaving server sends ``umadrive serve`` bad
input. The driver must log an error naming the value and the expectation, exit
non-zero, and send nothing after the handshake."""

from __future__ import annotations

import os
import socket
import struct

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.units import Bohr

TIMEOUT_S = 30
TEMPLATE = bulk("Cu", "fcc", a=3.6, cubic=True)  # 4 atoms


def posdata(*, nat: int | None = None, positions=None, cell=None, template=TEMPLATE) -> bytes:
    """POSDATA packed by hand (Bohr, lattice vectors as columns; cell in Å) + GETFORCE."""
    h = (template.cell.array if cell is None else cell).T / Bohr
    positions = template.positions / Bohr if positions is None else positions
    nat = len(positions) if nat is None else nat
    return (b"POSDATA     " + struct.pack("=9d", *h.ravel()) + struct.pack("=9d", *np.zeros(9))
            + struct.pack("=i", nat) + np.asarray(positions, dtype="=f8").tobytes()
            + b"GETFORCE    ")


def with_nan_position() -> bytes:
    positions = TEMPLATE.positions / Bohr
    positions[2, 1] = np.nan
    return posdata(positions=positions)


def with_inf_cell() -> bytes:
    cell = TEMPLATE.cell.array.copy()
    cell[1, 1] = np.inf
    return posdata(cell=cell)


def receive_until_closed(conn: socket.socket) -> bytes:
    """Everything the driver sends until it closes (a reset counts as closed: it
    comes when the driver leaves unread bytes behind)."""
    received = b""
    try:
        while chunk := conn.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    return received


CASES = {
    # name: (INIT text, bytes after the handshake, extra serve options, expected in the log)
    "nat above --max-atoms": (" ", posdata(nat=1001, positions=np.zeros((0, 3))),
                              ["--max-atoms", "1000"], "nat in [0, 1000]"),
    "negative nat": (" ", posdata(nat=-5, positions=np.zeros((0, 3))), [], "received -5"),
    "unknown header": (" ", b"BOGUS       ", [], "received 'BOGUS'"),
    "truncated payload": (" ", posdata()[:100], [], "end of stream after"),
    "non-finite positions": (" ", with_nan_position(), [], "non-finite positions"),
    "non-finite cell": (" ", with_inf_cell(), [], "non-finite cell"),
    "atom count differs from the template": (
        " ", posdata(positions=TEMPLATE.positions[:3] / Bohr), [],
        "nat=4 atoms, the template's count (give --structure the system the engine simulates, "
        "atoms in the same order), received nat=3"),
    "a claimed nat far beyond the template's": (
        " ", posdata(nat=9_999_999, positions=np.zeros((0, 3))), [],
        "nat=4 atoms, the template's count"),
    "bad batch_size in INIT": (" batch_size:0", b"", [], "batch_size in [1, 4096]"),
    "non-finite result from the backend": (
        " ", posdata(), ["--model", "ase:tests.driver.nan_calculator:NaNCalculator"],
        "non-finite values"),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_and_nothing_is_sent(processes, tmp_path, socket_name, test_env, case):
    init_text, bad, options, expected = CASES[case]
    after, status, log = serve_fault(processes, tmp_path, socket_name, test_env, TEMPLATE,
                                     init_text, bad, options, handshake="INIT" not in case)
    assert after == b"", f"the driver answered bad input with {after[:60]!r}"
    assert status == 1, log
    assert "ERROR" in log and expected in log, log


def serve_fault(processes, tmp_path, socket_name, test_env, template, init_text: str, bad: bytes,
                options: list[str], *, handshake: bool = True) -> tuple[bytes, int, str]:
    """Starts ``umadrive serve`` (``--model ase:emt`` unless ``options`` name one)
    with ``template`` against a hand-written server at ``socket_name`` that sends
    STATUS, INIT ``init_text``, STATUS (when ``handshake``), then ``bad`` and the
    end of its stream. Returns what the driver sent after the handshake, its exit
    status (bounded by the fixture's timeout) and its log."""
    structure = tmp_path / "template.extxyz"
    ase.io.write(structure, template)
    path = f"/tmp/ipi_{socket_name}"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(TIMEOUT_S)
    model = [] if "--model" in options else ["--model", "ase:emt"]
    try:
        serve = processes.serve(*model, "--structure", str(structure), "--unix", socket_name,
                                *options, env=test_env)
        conn, _ = listener.accept()
        conn.settimeout(TIMEOUT_S)
        with conn:
            conn.sendall(b"STATUS      ")
            assert conn.recv(12) == b"NEEDINIT    "
            raw = init_text.encode()
            conn.sendall(b"INIT        " + struct.pack("=ii", 0, len(raw)) + raw)
            if handshake:
                conn.sendall(b"STATUS      ")
                assert conn.recv(12) == b"READY       "
            conn.sendall(bad)
            conn.shutdown(socket.SHUT_WR)  # the payload ends here
            after = receive_until_closed(conn)
        status = processes.wait(serve)
    finally:
        listener.close()
        os.unlink(path)
    return after, status, (tmp_path / "serve.log").read_text()
