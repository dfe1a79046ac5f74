"""The server side refuses a driver's bad reply with a ProtocolError naming it."""

from __future__ import annotations

import socket
import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.reference import sheared_copper, to_structure
from umadrive.protocol import ForceServer, ProtocolError

TIMEOUT_S = 20


def wrong_nat_driver(name: str) -> None:
    """Answers the handshake, then replies to POSDATA with one atom too few."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(TIMEOUT_S)
        sock.connect(f"/tmp/ipi_{name}")
        assert sock.recv(12) == b"STATUS      "
        sock.sendall(b"READY       ")
        header = sock.recv(12)
        assert header == b"POSDATA     "
        nat = len(sheared_copper()) - 1
        sock.sendall(b"FORCEREADY  " + struct.pack("=di", 0.0, nat) + np.zeros(3 * nat + 9).tobytes()
                     + struct.pack("=i", 0))
        sock.recv(1 << 20)  # wait for the server to close


@pytest.mark.timeout(60)
def test_reply_with_another_atom_count_is_refused(socket_name):
    with ThreadPoolExecutor(1) as pool, ForceServer(unix=socket_name, timeout=TIMEOUT_S) as server:
        driver = pool.submit(wrong_nat_driver, socket_name)
        server.accept(timeout=TIMEOUT_S)
        with pytest.raises(ProtocolError, match=r"FORCEREADY for nat=32 atoms, received nat=31"):
            server.compute([to_structure(sheared_copper())])
        server.close()
        driver.result(timeout=TIMEOUT_S)


def test_accept_gives_up_with_a_clear_message(socket_name):
    with ForceServer(unix=socket_name) as server:
        with pytest.raises(ProtocolError, match=r"a driver to connect within 0.2 s"):
            server.accept(timeout=0.2)
