"""Framing and the message table of the i-PI protocol: exact-length reads,
12-byte headers, and the payload layouts (plain and batched).

Numbers are native-endian int32 and float64, as every peer sends them. Every
count read from the wire is checked against a cap before anything is allocated
for it. Encoders return the whole message as one ``bytes`` so that each reply
goes out in one ``sendall``.
"""

from __future__ import annotations

import select
import socket
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from umadrive.protocol.errors import ProtocolError, ReadInterrupted

HEADER_LENGTH = 12


def _header(name: str) -> bytes:
    return name.upper().ljust(HEADER_LENGTH).encode("ascii")


STATUS = _header("STATUS")
NEEDINIT = _header("NEEDINIT")
READY = _header("READY")
HAVEDATA = _header("HAVEDATA")
INIT = _header("INIT")
POSDATA = _header("POSDATA")
GETFORCE = _header("GETFORCE")
FORCEREADY = _header("FORCEREADY")
EXIT = _header("EXIT")

DEFAULT_MAX_ATOMS = 10_000_000
MAX_INIT_BYTES = 1 << 20  # an INIT string is a few parameters
MAX_EXTRAS_BYTES = 64 << 20  # per structure; e.g. per-atom values for ~1M atoms
MAX_BATCH_SIZE = 4096

_F64 = np.dtype(np.float64)
_I32 = np.dtype(np.int32)


def header_name(header: bytes) -> str:
    """A header as text for messages: ``'STATUS'``, or its repr when not ASCII."""
    try:
        return repr(header.decode("ascii").rstrip())
    except UnicodeDecodeError:
        return repr(header)


STOP_PATIENCE_S = 2.0
"""Once a stop is asked for, a read waits at most this long for each next byte
of the peer (enough for a reply's round trip; a silent peer is given up)."""


class Interrupt(Protocol):
    """What a :class:`Channel` waits on besides its socket: readable once a stop
    is asked for (e.g. :class:`umadrive.driver.lifecycle.StopFlag`)."""

    requested: str | None  # why the stop was asked for, once it was

    def fileno(self) -> int: ...


class Channel:
    """A connected socket that reads exact byte counts and names its peer in
    every error. With ``interrupt``, every read that has to wait also waits on
    it: once a stop is asked for, a peer that stays silent for
    :data:`STOP_PATIENCE_S` makes the read raise :class:`ReadInterrupted`
    (a half-read message included), instead of blocking until the peer closes."""

    def __init__(self, sock: socket.socket, peer: str, *, interrupt: Interrupt | None = None) -> None:
        self.sock = sock
        self.peer = peer
        self.interrupt = interrupt

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: bytes) -> None:
        """Sends one whole message (header and payload) in one ``sendall``."""
        try:
            self.sock.sendall(message)
        except OSError as error:
            raise ProtocolError(self.peer, f"to send {len(message)} bytes", f"{error}") from error

    def read_exact(self, nbytes: int, what: str) -> bytearray:
        """Reads exactly ``nbytes`` (the caller has capped it); EOF or a reset
        before the end is a :class:`ProtocolError` naming ``what``."""
        buffer = bytearray(nbytes)
        view = memoryview(buffer)
        received = 0
        while received < nbytes:
            try:
                self._wait_readable(f"{nbytes} bytes of {what}", received)
                count = self.sock.recv_into(view[received:], nbytes - received)
            except ReadInterrupted:
                raise
            except OSError as error:
                raise ProtocolError(
                    self.peer, f"{nbytes} bytes of {what}", f"{error} after {received} bytes"
                ) from error
            if count == 0:
                raise ProtocolError(
                    self.peer, f"{nbytes} bytes of {what}",
                    f"end of stream after {received} bytes (peer closed the connection)",
                )
            received += count
        return buffer

    def read_header(self, expected: str) -> bytes | None:
        """The next 12-byte header, or None when the peer closed the connection
        cleanly before sending any byte of it."""
        self._wait_readable(expected, 0)
        try:
            first = self.sock.recv(HEADER_LENGTH)
        except ConnectionResetError:
            return None
        except OSError as error:
            raise ProtocolError(self.peer, expected, f"{error}") from error
        if not first:
            return None
        if len(first) == HEADER_LENGTH:
            return bytes(first)
        return first + bytes(self.read_exact(HEADER_LENGTH - len(first), f"a header ({expected})"))

    def _wait_readable(self, what: str, received: int) -> None:
        """Returns once the socket has bytes (or an end of stream) to read; with
        an interrupt, raises :class:`ReadInterrupted` when a stop was asked for
        and the peer then stayed silent for :data:`STOP_PATIENCE_S`."""
        interrupt = self.interrupt
        if interrupt is None:
            return
        if interrupt.requested is None:
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            poller.register(interrupt, select.POLLIN)
            if any(fd == self.sock.fileno() for fd, _ in poller.poll()):
                return
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        if not poller.poll(1e3 * STOP_PATIENCE_S):
            raise ReadInterrupted(
                self.peer, what, f"nothing for {STOP_PATIENCE_S:g} s after {received} bytes "
                f"while stopping ({interrupt.requested})")

    def read_int32(self, what: str) -> int:
        return int(np.frombuffer(self.read_exact(4, what), dtype=_I32)[0])

    def read_float64(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.read_exact(count * _F64.itemsize, what), dtype=_F64)

    def read_count(self, what: str, limit: int, fix: str) -> int:
        """An int32 count that must lie in ``[0, limit]``."""
        value = self.read_int32(what)
        if not 0 <= value <= limit:
            raise ProtocolError(self.peer, f"{what} in [0, {limit}] ({fix})", f"{value}")
        return value


# ---------------------------------------------------------------- INIT


@dataclass(frozen=True)
class InitInfo:
    """What INIT told the driver.

    rid: the request id i-PI sent (a global counter, the bead index only in the
        simplest case).
    text: the parameter string, e.g. ``" a : 1 , batch_size:4"``.
    batch_size: structures per exchange, from ``batch_size:N`` (1 when absent).
    """

    rid: int
    text: str
    batch_size: int


def parse_batch_size(text: str, peer: str) -> int:
    """The N of a ``batch_size:N`` entry in an INIT string (1 when absent)."""
    for entry in text.split(","):
        key, sep, value = entry.partition(":")
        if sep and key.strip() == "batch_size":
            try:
                size = int(value.strip())
            except ValueError:
                size = -1
            if not 1 <= size <= MAX_BATCH_SIZE:
                raise ProtocolError(
                    peer, f"batch_size in [1, {MAX_BATCH_SIZE}] in the INIT string", repr(entry)
                )
            return size
    return 1


def encode_init(rid: int, text: str) -> bytes:
    """INIT with the length counted in bytes of the UTF-8 text (i-PI counts
    characters: the same for the ASCII parameter strings it sends)."""
    raw = text.encode("utf-8")
    return INIT + np.int32(rid).tobytes() + np.int32(len(raw)).tobytes() + raw


def read_init(channel: Channel) -> InitInfo:
    """The payload after an INIT header. The length counts bytes; bytes that are
    not UTF-8 become U+FFFD and never make the reader take more (or fewer) bytes
    than the length says, so the next header is read where it starts. (i-PI
    counts characters: the same for its ASCII parameter strings; were one not
    ASCII, the bytes left over would make the next header unknown, a
    :class:`ProtocolError`, never a wait.)"""
    rid = channel.read_int32("the INIT request id")
    length = channel.read_count(
        "the INIT string length", MAX_INIT_BYTES, "an INIT string is a few parameters"
    )
    raw = bytes(channel.read_exact(length, "the INIT string"))
    text = raw.decode("utf-8", errors="replace").replace("\x00", "")
    return InitInfo(rid=rid, text=text, batch_size=parse_batch_size(text, channel.peer))


# ---------------------------------------------------------------- POSDATA


@dataclass(frozen=True)
class WireStructure:
    """One structure as it travels: h (3, 3) Bohr, lattice vectors as columns;
    positions (nat, 3) Bohr."""

    h: np.ndarray
    positions: np.ndarray


def encode_posdata(structures: list[tuple[np.ndarray, np.ndarray, np.ndarray]], *, batched: bool) -> bytes:
    """POSDATA for ``(h, ih, positions)`` triples (Bohr): the plain layout for one
    structure, the batched layout (``nat`` first, all cells, all positions) when
    ``batched``."""
    nat = np.int32(len(structures[0][2])).tobytes()
    if not batched:
        (h, ih, positions), = structures
        return POSDATA + h.tobytes() + ih.tobytes() + nat + positions.tobytes()
    cells = b"".join(h.tobytes() + ih.tobytes() for h, ih, _ in structures)
    return POSDATA + nat + cells + b"".join(p.tobytes() for _, _, p in structures)


def read_posdata(channel: Channel, *, batch_size: int, max_atoms: int,
                 expected_atoms: int | None = None) -> list[WireStructure]:
    """The payload after a POSDATA header: ``batch_size`` structures in the
    batched layout when ``batch_size > 1``, else one in the plain layout.
    ``nat * batch_size`` is capped by ``max_atoms``, and ``nat`` must equal
    ``expected_atoms`` when given, before anything is allocated for the positions."""
    if batch_size == 1:
        cells = channel.read_float64(18, "POSDATA cell").reshape(2, 3, 3)
        nat = read_atom_count(channel, "POSDATA atom count nat", max_atoms, expected_atoms)
        positions = channel.read_float64(3 * nat, f"POSDATA positions of {nat} atoms")
        return [WireStructure(h=cells[0], positions=positions.reshape(nat, 3))]
    nat = read_atom_count(
        channel, f"batched POSDATA atom count nat ({batch_size} structures x nat atoms <= "
                 f"--max-atoms {max_atoms})", max_atoms // batch_size, expected_atoms,
        f"; the batch holds {batch_size} structures: --max-atoms >= {batch_size} x nat")
    cells = channel.read_float64(18 * batch_size, "batched POSDATA cells").reshape(batch_size, 2, 3, 3)
    positions = channel.read_float64(
        3 * nat * batch_size, f"batched POSDATA positions of {batch_size}x{nat} atoms"
    ).reshape(batch_size, nat, 3)
    return [WireStructure(h=cells[i, 0], positions=positions[i]) for i in range(batch_size)]


def read_atom_count(channel: Channel, what: str, limit: int, expected: int | None,
                    context: str = "") -> int:
    """An atom count ``nat`` in ``[0, limit]`` that equals ``expected`` (the
    template's atom count) when given; refused before any payload is read."""
    nat = channel.read_count(what, limit, "raise --max-atoms if the system really is that large"
                             + context)
    if expected is not None and nat != expected:
        raise ProtocolError(
            channel.peer, f"{what}: nat={expected} atoms, the template's count (give --structure "
            "the system the engine simulates, atoms in the same order)", f"nat={nat}",
        )
    return nat


# ---------------------------------------------------------------- FORCEREADY


@dataclass(frozen=True)
class WireResult:
    """One result as it travels: energy Hartree, forces (nat, 3) Hartree/Bohr,
    virial (3, 3) Hartree, extras (JSON text, may be empty)."""

    energy: float
    forces: np.ndarray
    virial: np.ndarray
    extras: bytes


def encode_forceready(results: list[WireResult], *, batched: bool) -> bytes:
    """FORCEREADY in the plain layout (one result) or the batched layout (all
    energies, nat, all forces, all virials, then each extras string)."""
    nat = np.int32(len(results[0].forces)).tobytes()
    if not batched:
        (result,) = results
        return b"".join((
            FORCEREADY, np.float64(result.energy).tobytes(), nat,
            np.ascontiguousarray(result.forces, dtype=_F64).tobytes(),
            np.ascontiguousarray(result.virial, dtype=_F64).tobytes(),
            np.int32(len(result.extras)).tobytes(), result.extras,
        ))
    parts = [FORCEREADY, np.array([r.energy for r in results], dtype=_F64).tobytes(), nat]
    parts += [np.ascontiguousarray(r.forces, dtype=_F64).tobytes() for r in results]
    parts += [np.ascontiguousarray(r.virial, dtype=_F64).tobytes() for r in results]
    for r in results:
        parts += [np.int32(len(r.extras)).tobytes(), r.extras]
    return b"".join(parts)


def read_forceready(channel: Channel, *, count: int, nat: int) -> list[WireResult]:
    """The payload after a FORCEREADY header for ``count`` structures of ``nat``
    atoms (``count > 1``: batched layout). A reply with another atom count is
    refused."""

    def check_nat() -> None:
        received = channel.read_int32("FORCEREADY atom count")
        if received != nat:
            raise ProtocolError(channel.peer, f"FORCEREADY for nat={nat} atoms", f"nat={received}")

    def read_extras() -> bytes:
        length = channel.read_count(
            "FORCEREADY extras length", MAX_EXTRAS_BYTES, "extras are a small JSON object"
        )
        return bytes(channel.read_exact(length, "FORCEREADY extras"))

    if count == 1:
        energy = float(channel.read_float64(1, "FORCEREADY energy")[0])
        check_nat()
        forces = channel.read_float64(3 * nat, "FORCEREADY forces").reshape(nat, 3)
        virial = channel.read_float64(9, "FORCEREADY virial").reshape(3, 3)
        return [WireResult(energy, forces, virial, read_extras())]
    energies = channel.read_float64(count, "batched FORCEREADY energies")
    check_nat()
    forces = channel.read_float64(3 * nat * count, "batched FORCEREADY forces").reshape(count, nat, 3)
    virials = channel.read_float64(9 * count, "batched FORCEREADY virials").reshape(count, 3, 3)
    return [WireResult(float(energies[i]), forces[i], virials[i], read_extras()) for i in range(count)]
