"""Every message through the client (DriverConnection) and server (ForceServer)
sides, in the plain and the batched layout, and each side against ASE's
independent implementation of the other."""

from __future__ import annotations

import os
import socket
import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.calculators.socketio import SocketClient
from ase.units import Bohr, Hartree

from tests.reference import (assert_prediction_close, emt, emt_on, sheared_copper,
                             small_molecule, to_structure)
from umadrive.protocol import ForceServer, connect
from umadrive.structure import Prediction
from umadrive.testing import tolerance

TOL = tolerance("float64")
TIMEOUT_S = 20


def run_emt_driver(name: str, template, extras: dict | None = None) -> dict:
    """A driver loop answering with direct EMT; returns what it saw."""
    seen = {"batches": [], "init": None}
    with connect(unix=name, timeout=TIMEOUT_S) as connection:
        while (request := connection.next_request()) is not None:
            seen["init"] = request.init
            seen["batches"].append(len(request.structures))
            predictions = [emt_on(s, template) for s in request.structures]
            if extras is not None:
                predictions = [Prediction(p.energy, p.forces, p.stress, extras) for p in predictions]
            connection.send_predictions(predictions)
        seen["end"] = connection.end_reason
    return seen


@pytest.mark.timeout(60)
@pytest.mark.parametrize("make_atoms", [sheared_copper, small_molecule])
def test_plain_exchange_round_trips(socket_name, make_atoms):
    atoms = make_atoms()
    with ThreadPoolExecutor(1) as pool, ForceServer(unix=socket_name, timeout=TIMEOUT_S) as server:
        driver = pool.submit(run_emt_driver, socket_name, atoms, {"model": "emt"})
        server.accept(timeout=TIMEOUT_S)
        assert server.status() == "READY"
        for shift in (0.0, 0.05):
            moved = atoms.copy()
            moved.positions += shift
            (got,) = server.compute([to_structure(moved)])
            assert_prediction_close(got, emt(moved), TOL, len(atoms))
            assert got.extras == {"model": "emt"}
            assert server.status() == "READY"
        server.close()  # sends EXIT
        seen = driver.result(timeout=TIMEOUT_S)
    assert seen == {"batches": [1, 1], "init": seen["init"], "end": "EXIT"}
    assert seen["init"].batch_size == 1 and seen["init"].text == " "


@pytest.mark.timeout(60)
def test_batched_exchange_pads_and_keeps_order(socket_name):
    atoms = sheared_copper()
    structures = []
    for i in range(3):
        moved = atoms.copy()
        moved.positions += 0.02 * i * np.cos(np.arange(len(atoms) * 3)).reshape(-1, 3)
        structures.append(moved)
    with ThreadPoolExecutor(1) as pool, ForceServer(unix=socket_name, batch_size=4,
                                                   init_text=" a : 1 ", timeout=TIMEOUT_S) as server:
        driver = pool.submit(run_emt_driver, socket_name, atoms)
        server.accept(timeout=TIMEOUT_S)
        got = server.compute([to_structure(a) for a in structures])
        server.close()
        seen = driver.result(timeout=TIMEOUT_S)
    assert len(got) == 3
    for prediction, moved in zip(got, structures):
        assert_prediction_close(prediction, emt(moved), TOL, len(atoms))
    assert seen["batches"] == [4]  # padded to the announced batch size
    assert seen["init"].batch_size == 4 and "a : 1" in seen["init"].text


@pytest.mark.timeout(60)
def test_force_server_against_ase_socket_client(socket_name):
    """ASE's SocketClient converts units and transposes matrices its own way."""
    atoms = sheared_copper()

    def ase_client() -> None:
        client_atoms = atoms.copy()
        client_atoms.calc = EMT()
        SocketClient(unixsocket=socket_name, timeout=TIMEOUT_S).run(client_atoms, use_stress=True)

    with ThreadPoolExecutor(1) as pool, ForceServer(unix=socket_name, timeout=TIMEOUT_S) as server:
        client = pool.submit(ase_client)
        server.accept(timeout=TIMEOUT_S)
        moved = atoms.copy()
        moved.positions[0] += 0.1
        (got,) = server.compute([to_structure(moved)])
        server.close()
        client.result(timeout=TIMEOUT_S)
    assert got.extras is None
    assert_prediction_close(got, emt(moved), TOL, len(atoms))


def _pack_posdata(h_columns_bohr: np.ndarray, positions_bohr: np.ndarray) -> bytes:
    """POSDATA packed by hand with struct, independent of umadrive.protocol."""
    n = len(positions_bohr)
    return (b"POSDATA     " + struct.pack("=9d", *h_columns_bohr.ravel())
            + struct.pack("=9d", *np.linalg.inv(h_columns_bohr).ravel())
            + struct.pack("=i", n) + struct.pack(f"={3 * n}d", *positions_bohr.ravel()))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return data


@pytest.mark.timeout(60)
def test_scripted_server_sees_every_state_and_exact_bytes(socket_name):
    """STATUS in each state, INIT, POSDATA, STATUS->HAVEDATA, GETFORCE, then a
    close without EXIT (as ASE ends), with the reply unpacked by hand."""
    atoms = sheared_copper()
    h = atoms.cell.array.T / Bohr  # lattice vectors as columns
    positions = atoms.positions / Bohr
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(f"/tmp/ipi_{socket_name}")
    listener.listen(1)
    listener.settimeout(TIMEOUT_S)
    try:
        with ThreadPoolExecutor(1) as pool:
            driver = pool.submit(run_emt_driver, socket_name, atoms)
            conn, _ = listener.accept()
            conn.settimeout(TIMEOUT_S)
            with conn:
                def ask_status() -> bytes:
                    conn.sendall(b"STATUS      ")
                    return _recv_exact(conn, 12)

                assert ask_status() == b"NEEDINIT    "
                conn.sendall(b"INIT        " + struct.pack("=ii", 7, 5) + b" x:1 ")
                assert ask_status() == b"READY       "
                conn.sendall(_pack_posdata(h, positions))
                assert ask_status() == b"HAVEDATA    "
                assert ask_status() == b"HAVEDATA    "
                conn.sendall(b"GETFORCE    ")
                n = len(atoms)
                reply = _recv_exact(conn, 12 + 8 + 4 + 24 * n + 72 + 4)
                assert reply[:12] == b"FORCEREADY  "
                energy, nat = struct.unpack_from("=di", reply, 12)
                forces = np.array(struct.unpack_from(f"={3 * n}d", reply, 24)).reshape(n, 3)
                virial = np.array(struct.unpack_from("=9d", reply, 24 + 24 * n)).reshape(3, 3)
                (extras_length,) = struct.unpack_from("=i", reply, 24 + 24 * n + 72)
                assert ask_status() == b"READY       "
            seen = driver.result(timeout=TIMEOUT_S)
    finally:
        listener.close()
        os.unlink(f"/tmp/ipi_{socket_name}")
    direct = emt(atoms)
    assert nat == n and extras_length == 0
    assert abs(energy * Hartree - direct.energy) <= TOL.energy_per_atom * n
    np.testing.assert_allclose(forces * Hartree / Bohr, direct.forces, rtol=0, atol=TOL.forces)
    np.testing.assert_allclose(virial * Hartree, -direct.stress * atoms.get_volume(),
                               rtol=0, atol=TOL.stress * atoms.get_volume())
    assert seen["init"].rid == 7 and seen["end"] == "EOF"
