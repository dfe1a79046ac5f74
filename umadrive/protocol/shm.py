"""i-PI's shared-memory transport (``<ffsocket mode="shm">``, i-PI >= 3.3).

The unix socket carries the same control messages as the plain protocol (STATUS,
INIT, POSDATA, GETFORCE, FORCEREADY, EXIT) and the extras strings; the numeric
arrays live in six POSIX shared-memory segments that i-PI creates for each
client, sized once for ``batch_size`` structures of ``nat`` atoms:

======  ===========================  =================
kind    shape (float64, row-major)   direction
======  ===========================  =================
pos     (batch_size, 3 * nat) Bohr   i-PI -> driver
h       (batch_size, 3, 3) Bohr      i-PI -> driver (lattice vectors as columns)
ih      (batch_size, 3, 3) 1/Bohr    i-PI -> driver (ignored, as on the socket)
pot     (batch_size,) Hartree        driver -> i-PI
force   (batch_size, 3 * nat)        driver -> i-PI, Hartree/Bohr
vir     (batch_size, 3, 3) Hartree   driver -> i-PI
======  ===========================  =================

POSDATA's payload is ``int32 nat``, followed on the first exchange only by the
six segment names (``int32 length`` + bytes each, in the order above). The reply
is the FORCEREADY header followed by ``batch_size`` extras strings (``int32
length`` + bytes each); the results are written into the segments before it is
sent. i-PI owns the segments (creates and unlinks them); the driver only attaches.
"""

from __future__ import annotations

import sys
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from umadrive.protocol import messages as msg
from umadrive.protocol.addresses import DEFAULT_PREFIX, connect_with_retry, resolve_address
from umadrive.protocol.client import DriverConnection
from umadrive.protocol.errors import ProtocolError

SEGMENT_KINDS = ("pos", "h", "ih", "pot", "force", "vir")
MAX_SEGMENT_NAME_BYTES = 255  # NAME_MAX of POSIX shared memory on Linux and macOS


def _segment_shapes(batch_size: int, nat: int) -> dict[str, tuple[int, ...]]:
    return {
        "pos": (batch_size, nat, 3),
        "h": (batch_size, 3, 3),
        "ih": (batch_size, 3, 3),
        "pot": (batch_size,),
        "force": (batch_size, nat, 3),
        "vir": (batch_size, 3, 3),
    }


def _attach(name: str) -> SharedMemory:
    """Attaches to an existing segment without taking ownership: Python before
    3.13 registers every attached segment with its resource tracker, which would
    unlink i-PI's segment when this process exits."""
    if sys.version_info >= (3, 13):
        return SharedMemory(name=name, track=False)
    segment = SharedMemory(name=name)
    resource_tracker.unregister(segment._name, "shared_memory")  # i-PI unlinks it
    return segment


class SharedMemoryConnection(DriverConnection):
    """A :class:`DriverConnection` whose positions and results travel through
    i-PI's shared-memory segments. Use :func:`connect_shm` to open it."""

    def __init__(self, channel: msg.Channel, *, max_atoms: int = msg.DEFAULT_MAX_ATOMS,
                 expected_atoms: int | None = None) -> None:
        super().__init__(channel, max_atoms=max_atoms, expected_atoms=expected_atoms)
        self._segments: list[SharedMemory] = []
        self._views: dict[str, np.ndarray] = {}
        self._nat: int | None = None

    def _receive_structures(self, batch_size: int) -> list[msg.WireStructure]:
        channel = self._channel
        nat = msg.read_atom_count(channel, "shared-memory POSDATA atom count nat",
                                  self._max_atoms // batch_size, self._expected_atoms,
                                  f" (batches of {batch_size})")
        if self._nat is None:
            self._attach_segments(batch_size, nat)
        elif nat != self._nat:
            raise ProtocolError(
                channel.peer, f"nat={self._nat} (the shared-memory segments are sized for it)",
                f"nat={nat}",
            )
        # copies: no view of i-PI's segments outlives this call
        positions, cells = self._views["pos"], self._views["h"]
        return [msg.WireStructure(h=cells[i].copy(), positions=positions[i].copy())
                for i in range(batch_size)]

    def _attach_segments(self, batch_size: int, nat: int) -> None:
        channel = self._channel
        names = []
        for kind in SEGMENT_KINDS:
            length = channel.read_count(
                f"the length of the '{kind}' segment name", MAX_SEGMENT_NAME_BYTES,
                "a POSIX shared-memory name is short",
            )
            raw = bytes(channel.read_exact(length, f"the '{kind}' segment name"))
            try:
                names.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise ProtocolError(
                    channel.peer, f"a UTF-8 '{kind}' segment name", repr(raw)
                ) from None
        shapes = _segment_shapes(batch_size, nat)
        for kind, name in zip(SEGMENT_KINDS, names):
            shape = shapes[kind]
            try:
                segment = _attach(name)
            except OSError as error:
                raise ProtocolError(
                    channel.peer, f"an existing shared-memory segment {name!r} ({kind})",
                    f"{error} (the driver must run on the same node as i-PI)",
                ) from error
            self._segments.append(segment)
            needed = int(np.prod(shape)) * np.dtype(np.float64).itemsize
            if segment.size < needed:
                raise ProtocolError(
                    channel.peer,
                    f"segment {name!r} ({kind}) of at least {needed} bytes for "
                    f"{batch_size} structure(s) of {nat} atoms", f"{segment.size} bytes",
                )
            self._views[kind] = np.ndarray(shape, dtype=np.float64, buffer=segment.buf)
        self._nat = nat

    def _encode_reply(self, results: list[msg.WireResult], *, batched: bool) -> bytes:
        """Writes every result into the segments, then returns FORCEREADY and
        the extras strings: i-PI reads the segments once FORCEREADY arrives."""
        for index, result in enumerate(results):
            self._views["pot"][index] = result.energy
            self._views["force"][index] = result.forces
            self._views["vir"][index] = result.virial
        extras = b"".join(np.int32(len(r.extras)).tobytes() + r.extras for r in results)
        return msg.FORCEREADY + extras

    def close(self) -> None:
        """Closes the socket (see :meth:`DriverConnection.close`) and detaches
        from the segments; i-PI unlinks them."""
        super().close()
        self._views.clear()
        for segment in self._segments:
            segment.close()
        self._segments.clear()


def connect_shm(
    *,
    unix: str,
    prefix: str = DEFAULT_PREFIX,
    timeout: float = 60.0,
    max_atoms: int = msg.DEFAULT_MAX_ATOMS,
    expected_atoms: int | None = None,
    interrupt: msg.Interrupt | None = None,
) -> SharedMemoryConnection:
    """Connects to i-PI's ``<ffsocket mode="shm">`` at the unix socket ``prefix +
    unix`` (the control channel), retrying for up to ``timeout`` seconds.
    ``max_atoms`` caps the ``nat`` POSDATA announces (times the batch size);
    ``expected_atoms``, when given, is the only ``nat`` accepted; ``interrupt`` as
    for :func:`~umadrive.protocol.client.connect`."""
    address = resolve_address(unix=unix, prefix=prefix, host=None, port=None)
    sock = connect_with_retry(address, timeout)
    return SharedMemoryConnection(msg.Channel(sock, f"server {address} (shared memory)",
                                              interrupt=interrupt),
                                  max_atoms=max_atoms, expected_atoms=expected_atoms)
