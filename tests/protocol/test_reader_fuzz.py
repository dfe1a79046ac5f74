"""Fuzzing the client's message reader (DriverConnection.read_message over a real
socket pair) with random and mutated message streams.

Invariants, for every stream: each read returns a request, None (a message
answered, EXIT or the end of the stream) or raises ProtocolError, never anything
else; no read waits (the stream always ends, so a reader waiting for bytes that
never come would hit the socket timeout, which fails the test); memory allocated
while reading stays within the caps (``MAX_ATOMS`` atoms, the INIT cap) whatever
the counts the stream claims.

CI runs a fixed, small budget. A longer campaign::

    UMADRIVE_FUZZ_EXAMPLES=100000 PYTHONPATH=$PWD python -m pytest -q \\
        tests/protocol/test_reader_fuzz.py --timeout 0

(``UMADRIVE_FUZZ_EXAMPLES`` sets hypothesis' ``max_examples``; add
``--hypothesis-seed=N`` to vary the search, ``--hypothesis-show-statistics``
to see where the time goes).
"""

from __future__ import annotations

import os
import socket
import struct
import tracemalloc
from datetime import timedelta

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from umadrive.protocol import DriverConnection, ProtocolError
from umadrive.protocol import messages as msg
from umadrive.structure import Prediction

MAX_ATOMS = 64
EXAMPLES = int(os.environ.get("UMADRIVE_FUZZ_EXAMPLES", "300"))
READ_TIMEOUT_S = 5.0
# what one read may hold at once: an INIT string at its cap, or a POSDATA at the
# atom cap, plus bookkeeping
ALLOCATION_BOUND = msg.MAX_INIT_BYTES + 64 * 1024

HEADERS = [msg.STATUS, msg.INIT, msg.POSDATA, msg.GETFORCE, msg.EXIT, msg.READY,
           msg.FORCEREADY, b"BOGUS       "]
counts = st.one_of(st.integers(-3, MAX_ATOMS + 3), st.integers(-2**31, 2**31 - 1),
                   st.sampled_from([0, 1, 4, 9_999_999, msg.MAX_INIT_BYTES + 1]))


@st.composite
def init(draw) -> bytes:
    text = draw(st.one_of(st.binary(max_size=40),
                          st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
                          st.sampled_from([b" ", b" batch_size:2", b" batch_size:0", b"\xff"])))
    length = draw(st.one_of(st.just(len(text)), counts))
    return msg.INIT + struct.pack("=ii", draw(st.integers(-5, 5)), length) + text


@st.composite
def posdata(draw) -> bytes:
    nat = draw(st.integers(0, 4))
    values = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True),
                           min_size=18 + 3 * nat, max_size=18 + 3 * nat))
    claimed = draw(st.one_of(st.just(nat), counts))
    body = np.array(values, dtype="=f8").tobytes()
    return msg.POSDATA + body[:144] + struct.pack("=i", claimed) + body[144:]


message = st.one_of(st.sampled_from(HEADERS), init(), posdata(), st.binary(max_size=30))


@st.composite
def stream(draw) -> bytes:
    data = b"".join(draw(st.lists(message, max_size=8)))
    if data and draw(st.booleans()):  # mutate: flip, cut or insert bytes
        position = draw(st.integers(0, len(data) - 1))
        change = draw(st.sampled_from(["flip", "cut", "insert"]))
        if change == "flip":
            data = data[:position] + bytes([data[position] ^ draw(st.integers(1, 255))]) \
                + data[position + 1:]
        elif change == "cut":
            data = data[:position]
        else:
            data = data[:position] + draw(st.binary(min_size=1, max_size=8)) + data[position:]
    return data


def read_all(data: bytes) -> None:
    """Feeds ``data`` and the end of the stream to a fresh connection and reads
    until it ends or refuses; a request is answered with zeros."""
    server, client = socket.socketpair()
    with server, client:
        client.settimeout(READ_TIMEOUT_S)
        server.sendall(data)
        server.shutdown(socket.SHUT_WR)
        connection = DriverConnection(msg.Channel(client, "fuzz"), max_atoms=MAX_ATOMS)
        for _ in range(len(data) + 1):  # every message but EOF consumes a byte at least
            try:
                request = connection.read_message()
            except ProtocolError as error:
                assert "timed out" not in str(error), f"the reader waited: {error}"
                return
            if connection.end_reason is not None:
                return
            if request is not None:
                for structure in request.structures:
                    assert structure.positions.shape == (structure.n_atoms, 3)
                    assert structure.n_atoms <= MAX_ATOMS
                connection.send_predictions([
                    Prediction(energy=0.0, forces=np.zeros((s.n_atoms, 3)))
                    for s in request.structures])
        raise AssertionError("the reader neither ended nor refused")


def peak_allocation(data: bytes) -> int:
    """Bytes allocated at most while :func:`read_all` reads ``data``."""
    tracemalloc.start()
    try:
        read_all(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@settings(max_examples=EXAMPLES, deadline=timedelta(seconds=2 * READ_TIMEOUT_S),
          derandomize="UMADRIVE_FUZZ_EXAMPLES" not in os.environ,
          suppress_health_check=[HealthCheck.too_slow])
@given(stream())
def test_the_reader_returns_a_message_or_refuses_never_more(data):
    peak = peak_allocation(data)
    assert peak <= ALLOCATION_BOUND, f"{peak} bytes allocated reading {len(data)} bytes"


def test_the_allocation_check_sees_the_reader_allocate():
    """An INIT claiming the cap makes the reader allocate that much (and wait for
    it, until the end of the stream): the bound above is measured, not assumed."""
    data = msg.INIT + struct.pack("=ii", 0, msg.MAX_INIT_BYTES) + b" "
    assert msg.MAX_INIT_BYTES <= peak_allocation(data) <= ALLOCATION_BOUND
