"""Fault injection: a hand-written misbehaving server sends the driver (embedded
in the test process) bad input. The driver must log an error naming the value
and the expectation, end with status 1, and send nothing after the handshake."""

from __future__ import annotations

import logging
import os
import socket
import struct

import numpy as np
import pytest
from ase.build import bulk
from ase.units import Bohr

from tests.driver.threads import ServeThread
from umadrive.driver import ServeOptions, make_backend
from umadrive.protocol.addresses import DEFAULT_PREFIX, Address

TIMEOUT_S = 30
TEMPLATE = bulk("Cu", "fcc", a=3.6, cubic=True)  # 4 atoms


def posdata(*, nat: int | None = None, positions=None, cell=None) -> bytes:
    """POSDATA packed by hand (Bohr, lattice vectors as columns) + GETFORCE."""
    h = (TEMPLATE.cell.array if cell is None else cell).T / Bohr
    positions = TEMPLATE.positions / Bohr if positions is None else positions
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
    # name: (INIT text, bytes after the handshake, serve options, expected in the log)
    "nat above max_atoms": (" ", posdata(nat=1001, positions=np.zeros((0, 3))),
                            {"max_atoms": 1000}, "nat in [0, 1000]"),
    "negative nat": (" ", posdata(nat=-5, positions=np.zeros((0, 3))), {}, "received -5"),
    "unknown header": (" ", b"BOGUS       ", {}, "received 'BOGUS'"),
    "truncated payload": (" ", posdata()[:100], {}, "end of stream after"),
    "non-finite positions": (" ", with_nan_position(), {}, "non-finite positions"),
    "non-finite cell": (" ", with_inf_cell(), {}, "non-finite cell"),
    "atom count differs from the template": (
        " ", posdata(positions=TEMPLATE.positions[:3] / Bohr), {},
        "the request has 3 atoms, the template structure has 4"),
    "bad batch_size in INIT": (" batch_size:0", b"", {}, "batch_size in [1, 4096]"),
    "non-finite result from the backend": (" ", posdata(), {}, "non-finite values"),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_and_nothing_is_sent(socket_name, caplog, case):
    init_text, bad, options, expected = CASES[case]
    model = "ase:tests.driver.nan_calculator:NaNCalculator" if "backend" in case else "ase:emt"
    path = DEFAULT_PREFIX + socket_name
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(TIMEOUT_S)
    caplog.set_level(logging.INFO)
    try:
        driver = ServeThread(make_backend(model, TEMPLATE), TEMPLATE, Address(path=path),
                             ServeOptions(connect_timeout_s=TIMEOUT_S, **options))
        conn, _ = listener.accept()
        conn.settimeout(TIMEOUT_S)
        with conn:
            conn.sendall(b"STATUS      ")
            assert conn.recv(12) == b"NEEDINIT    "
            conn.sendall(b"INIT        " + struct.pack("=ii", 0, len(init_text)) + init_text.encode())
            if "INIT" not in case:  # after a bad INIT the driver may already have closed
                conn.sendall(b"STATUS      ")
                assert conn.recv(12) == b"READY       "
                conn.sendall(bad)
            conn.shutdown(socket.SHUT_WR)  # the payload ends here
            after = receive_until_closed(conn)
        status = driver.join(TIMEOUT_S)
    finally:
        listener.close()
        os.unlink(path)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert after == b"", f"the driver answered bad input with {after[:60]!r}"
    assert status == 1, caplog.text
    assert any(expected in message for message in errors), caplog.text
