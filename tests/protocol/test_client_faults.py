"""Fault injection against the client side (DriverConnection): a raw socket
server written here sends what no real server sends, and the client must answer
the next message correctly or refuse with a ProtocolError, within a bound."""

from __future__ import annotations

import socket
import struct
from concurrent.futures import ThreadPoolExecutor

import pytest

from umadrive.protocol import ProtocolError, connect

TIMEOUT_S = 20


def init_message(raw: bytes, *, length: int | None = None) -> bytes:
    """INIT with ``raw`` as the string, its length field ``len(raw)`` unless given."""
    return b"INIT        " + struct.pack("=ii", 3, len(raw) if length is None else length) + raw


def serve_once(socket_name: str, driver, script) -> object:
    """Listens at /tmp/ipi_<socket_name>, runs ``driver(name)`` in a thread and
    ``script(conn)`` on the accepted connection (every recv bounded by
    TIMEOUT_S); returns what the driver returned."""
    path = f"/tmp/ipi_{socket_name}"
    with socket.socket(socket.AF_UNIX) as listener, ThreadPoolExecutor(1) as pool:
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(TIMEOUT_S)
        result = pool.submit(driver, socket_name)
        conn, _ = listener.accept()
        conn.settimeout(TIMEOUT_S)
        with conn:
            script(conn)
        return result.result(timeout=TIMEOUT_S)


def run_until_end(name: str):
    """A driver that answers until EXIT; returns the INIT it saw."""
    with connect(unix=name, timeout=TIMEOUT_S) as connection:
        assert connection.next_request() is None
        assert connection.end_reason == "EXIT"
        return connection.init


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("raw", "text"), [
    (b"\xff", "\ufffd"),  # not UTF-8 at all
    ("é".encode(), "é"),  # two bytes, counted as two
    (b" a:1 \xc3", " a:1 \ufffd"),  # a character cut by the length
])
def test_init_length_counts_bytes_and_never_desynchronises(socket_name, raw, text):
    def script(conn: socket.socket) -> None:
        conn.sendall(b"STATUS      ")
        assert conn.recv(12) == b"NEEDINIT    "
        # INIT and STATUS in one write: a reader taking one byte too many eats the
        # S of STATUS and both sides wait for ever (the socket timeout bounds it here)
        conn.sendall(init_message(raw) + b"STATUS      ")
        assert conn.recv(12) == b"READY       "
        conn.sendall(b"EXIT        ")

    init = serve_once(socket_name, run_until_end, script)
    assert init.text == text and init.rid == 3 and init.batch_size == 1


@pytest.mark.timeout(60)
def test_a_claimed_nat_beyond_the_expected_count_is_refused_before_the_payload(socket_name):
    """The template fixes nat: a POSDATA claiming 9,999,999 atoms is refused after
    its 4-byte count, before its positions are read (the server sends none: a
    reader that waited for them would time out instead)."""
    def driver(name: str) -> str:
        with connect(unix=name, timeout=TIMEOUT_S, expected_atoms=32) as connection:
            with pytest.raises(ProtocolError, match=r"nat=32 atoms, the template's count .* "
                                                    r"received nat=9999999"):
                connection.next_request()
            return "refused"

    def script(conn: socket.socket) -> None:
        conn.sendall(b"STATUS      ")
        assert conn.recv(12) == b"NEEDINIT    "
        conn.sendall(b"POSDATA     " + bytes(18 * 8) + struct.pack("=i", 9_999_999))
        assert conn.recv(12) == b""  # closed without a reply

    assert serve_once(socket_name, driver, script) == "refused"
