"""Fault injection against the embedded driver: a hand-written misbehaving server
(a real peer cannot send these bytes) and ``serve(...)`` running in a thread."""

from __future__ import annotations

import logging
import os
import socket
import struct

import ase
import numpy as np
import pytest
from ase.units import Bohr

from tests.driver.threads import ServeThread
from umadrive.driver import ServeOptions, make_backend
from umadrive.protocol.addresses import DEFAULT_PREFIX, Address

TIMEOUT_S = 30


def posdata(template: ase.Atoms, *, nat: int | None = None, positions=None, cell=None) -> bytes:
    """POSDATA packed by hand (Bohr, lattice vectors as columns; ``cell`` in Å,
    ``positions`` in Bohr) + GETFORCE; the template's values unless given."""
    h = (template.cell.array if cell is None else cell).T / Bohr
    positions = template.positions / Bohr if positions is None else positions
    nat = len(positions) if nat is None else nat
    return (b"POSDATA     " + struct.pack("=9d", *h.ravel()) + struct.pack("=9d", *np.zeros(9))
            + struct.pack("=i", nat) + np.asarray(positions, dtype="=f8").tobytes()
            + b"GETFORCE    ")


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


def serve_fault(socket_name: str, caplog: pytest.LogCaptureFixture, template: ase.Atoms,
                init_text: str, bad: bytes, *, model: str = "ase:emt", options: dict | None = None,
                handshake: bool = True) -> tuple[bytes, int, list[str]]:
    """Serves ``model`` for ``template`` in a thread against a server at
    ``socket_name`` that sends STATUS, INIT ``init_text`` (its length in bytes),
    STATUS and ``bad`` (these two only when ``handshake``), then ends its stream.
    Returns what the driver sent after the handshake, its exit status (it must end
    within :data:`TIMEOUT_S`) and its error messages."""
    path = DEFAULT_PREFIX + socket_name
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(TIMEOUT_S)
    caplog.set_level(logging.INFO)
    try:
        driver = ServeThread(make_backend(model, template), template, Address(path=path),
                             ServeOptions(connect_timeout_s=TIMEOUT_S, **(options or {})))
        conn, _ = listener.accept()
        conn.settimeout(TIMEOUT_S)
        with conn:
            conn.sendall(b"STATUS      ")
            assert conn.recv(12) == b"NEEDINIT    "
            raw = init_text.encode()
            conn.sendall(b"INIT        " + struct.pack("=ii", 0, len(raw)) + raw)
            if handshake:  # after a bad INIT the driver may already have closed
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
    return after, status, errors
