"""i-PI's shared-memory transport: real i-PI 3.3 ``<ffsocket mode='shm'>`` runs
served by ``umadrive serve --shm`` (one connection, or four batched together:
every connection has its own segments), and fault injection with a fake server
that announces bad segments."""

from __future__ import annotations

import itertools
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from tests.driver.pimd import (
    NBEADS, STEPS, assert_every_bead_matches_emt, pimd_input, requests_served,
)
from umadrive.protocol import messages as msg
from umadrive.protocol.addresses import DEFAULT_PREFIX
from umadrive.protocol.errors import ProtocolError
from umadrive.protocol.shm import SEGMENT_KINDS, SharedMemoryConnection
from umadrive.structure import Prediction


@pytest.mark.timeout(180)
@pytest.mark.parametrize("batch_size, consolidate, connections",
                         [(1, True, 1), (4, True, 1), (1, False, 1), (1, True, 4)])
def test_pimd_over_shared_memory_every_bead_matches_direct_emt(
        processes, tmp_path, socket_name, batch_size, consolidate, connections):
    ipi = processes.ipi(pimd_input(tmp_path, unix=socket_name, transport="shm",
                                   batch_size=batch_size, consolidate=consolidate))
    serve = processes.serve("--shm", "--unix", socket_name, "--connections", str(connections),
                            "--model", "ase:emt", "--structure", str(tmp_path / "alloy.extxyz"))
    assert processes.wait(ipi) == 0, processes.logs()
    assert processes.wait(serve) == 0, processes.logs()
    log = (tmp_path / "serve.log").read_text()
    count = f"{connections} connection{'s' if connections > 1 else ''}"
    assert f"connected to unix:{DEFAULT_PREFIX}{socket_name} (shared memory, {count})" in log, log
    assert "the server sent EXIT after" in log, log
    assert requests_served(log) == {"umadrive serve": NBEADS * (STEPS + 1) // batch_size}, \
        processes.logs()
    assert_every_bead_matches_emt(tmp_path)


# ---------------------------------------------------------------- fault injection

_segment_counter = itertools.count()
SHM_FOLDER = Path("/dev/shm")  # where Linux keeps POSIX shared memory


@pytest.fixture
def segments():
    """Creates segments as i-PI would (named, sized). They are made as files in
    /dev/shm rather than with SharedMemory(create=True): that would register them
    with this process's resource tracker, which the driver side, attaching in the
    same process, unregisters."""
    created: list[Path] = []

    def create(nbytes: dict[str, int]) -> list[str]:
        tag = f"umadrive_test_{os.getpid()}_{next(_segment_counter)}"
        names = [f"{tag}_{kind}" for kind in SEGMENT_KINDS]
        for name, kind in zip(names, SEGMENT_KINDS):
            path = SHM_FOLDER / name
            with open(path, "wb") as segment:
                segment.truncate(nbytes[kind])
            created.append(path)
        return names

    yield create
    for path in created:
        path.unlink()


def _full_sizes(nat: int) -> dict[str, int]:
    return {"pos": 24 * nat, "h": 72, "ih": 72, "pot": 8, "force": 24 * nat, "vir": 72}


def _posdata(nat: int, names: list[str] | None) -> bytes:
    payload = msg.POSDATA + np.int32(nat).tobytes()
    for name in names or []:
        payload += np.int32(len(name)).tobytes() + name.encode()
    return payload


def _exchange(*messages: bytes) -> SharedMemoryConnection:
    """A driver connection whose fake server has already sent ``messages``."""
    server, client = socket.socketpair()
    server.sendall(b"".join(messages))
    server.close()
    return SharedMemoryConnection(msg.Channel(client, "fake i-PI"))


def test_segment_smaller_than_the_announced_atoms_is_refused(segments):
    sizes = _full_sizes(32) | {"force": 24 * 31}
    names = segments(sizes)
    with _exchange(_posdata(32, names)) as connection, pytest.raises(ProtocolError) as error:
        connection.next_request()
    assert f"segment {names[4]!r} (force) of at least {24 * 32} bytes" in str(error.value)
    assert f"received {24 * 31} bytes" in str(error.value)


def test_missing_segment_is_refused_with_a_same_node_hint():
    names = [f"umadrive_test_absent_{os.getpid()}_{kind}" for kind in SEGMENT_KINDS]
    with _exchange(_posdata(4, names)) as connection, pytest.raises(ProtocolError) as error:
        connection.next_request()
    assert names[0] in str(error.value) and "same node" in str(error.value)


def test_atom_count_change_after_the_first_exchange_is_refused(segments):
    names = segments(_full_sizes(4))
    server, client = socket.socketpair()
    with SharedMemoryConnection(msg.Channel(client, "fake i-PI")) as connection:
        server.sendall(_posdata(4, names) + msg.GETFORCE)
        request = connection.next_request()
        connection.send_predictions([Prediction(energy=0.0, forces=np.zeros((4, 3)), stress=None)
                                     for _ in request.structures])
        server.sendall(_posdata(5, None))
        with pytest.raises(ProtocolError, match=r"expected nat=4 .*received nat=5"):
            connection.next_request()
    server.close()


def test_oversized_segment_name_is_refused_before_reading_it():
    payload = msg.POSDATA + np.int32(4).tobytes() + np.int32(1 << 20).tobytes()
    with _exchange(payload) as connection, pytest.raises(ProtocolError, match="segment name in"):
        connection.next_request()
