"""i-PI's MPI transport (``<ffmpi>``, i-PI >= 3.3), with mpi4py imported only here.

i-PI is rank 0 of one MPMD job, the drivers are the other ranks::

    mpiexec -n 1 i-pi input.xml : -n K umadrive serve --mpi ...

Every rank takes part in one ``COMM_WORLD.Split`` (i-PI takes color 0, the
drivers color 1). Each driver rank here is a group of its own and first sends
HELLO: the int32 array ``[world rank, 1, world rank]`` (root, group size,
members) and then the forcefield name as bytes (empty: the only ``<ffmpi>``).
Then i-PI sends, all on COMM_WORLD with these tags:

=====  ======  ==============================================================
tag    name    payload
=====  ======  ==============================================================
2      INIT    int32 ``[rid, length]``, then ``length`` bytes of parameters
3      WORK    int32 ``[nat, count]``, then ``count`` x (h 9, ih 9, positions
               3 nat) float64 in Bohr, ``count`` <= the ``batch_size`` in INIT
4      RESULT  (driver) ``count`` x (energy, forces 3 nat, virial 9) float64
               in Hartree, Hartree/Bohr, Hartree
5      EXTRA   (driver) ``count`` x (int32 length + bytes): one byte message
6      EXIT    one int32: the run is over
=====  ======  ==============================================================

Sizes announced in a header are capped, and checked against the size of the
message that follows, before anything is allocated.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from umadrive.protocol import messages as msg
from umadrive.protocol.client import InitInfo, Request, wire_results
from umadrive.protocol.errors import ProtocolError
from umadrive.protocol.units import structure_from_wire
from umadrive.structure import Prediction

if TYPE_CHECKING:
    from mpi4py import MPI

TAG_HELLO, TAG_INIT, TAG_WORK, TAG_RESULT, TAG_EXTRA, TAG_EXIT = range(1, 7)
IPI_RANK = 0  # i-PI insists on being rank 0 of COMM_WORLD
DRIVER_COLOR = 1  # i-PI splits COMM_WORLD with color 0
_WORK_HEADER = 18  # h and ih before each structure's positions

# While idle the driver polls with a growing pause: quick answers during a run,
# and no core spinning in MPI's busy-wait while i-PI is between steps.
MIN_POLL_S = 1e-5
MAX_POLL_S = 2e-3


def _import_mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(
            f"--mpi needs mpi4py ({error}); install it with `pip install 'umadrive[mpi]'` "
            "(mpi4py and mpich), or build mpi4py against the MPI library of your cluster"
        ) from error
    return MPI


class MpiConnection:
    """One driver rank of i-PI's ``<ffmpi>``: the same ``next_request`` /
    ``send_predictions`` interface as :class:`~umadrive.protocol.DriverConnection`.
    Use :func:`connect_mpi` to open it."""

    def __init__(self, comm: MPI.Comm, *, name: str = "",
                 max_atoms: int = msg.DEFAULT_MAX_ATOMS) -> None:
        if max_atoms < 1:
            raise ValueError(f"max_atoms={max_atoms} must be at least 1")
        self._mpi = _import_mpi()
        self._comm = comm
        self._max_atoms = max_atoms
        self._init: InitInfo | None = None
        self._request: Request | None = None
        self.name = name
        self.rank = comm.Get_rank()
        self.end_reason: str | None = None  # "EXIT" once next_request returned None

    @property
    def peer(self) -> str:
        forcefield = f" <ffmpi name='{self.name}'>" if self.name else " <ffmpi>"
        return f"i-PI{forcefield} at MPI rank {IPI_RANK}"

    def close(self) -> None:
        """Nothing to release: MPI ends with the process (mpi4py finalizes)."""

    def abort(self, status: int = 1) -> None:
        """Ends the whole MPI job, i-PI included, with ``status`` (``MPI_Abort``):
        i-PI waits for every answer it hands out, with no timeout, so a rank that
        gives up on a request must not leave it waiting."""
        self._comm.Abort(status)

    def __enter__(self) -> MpiConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def next_request(self) -> Request | None:
        """Waits for WORK and returns it, taking INIT on the way. Returns None on
        EXIT. Raises :class:`ProtocolError` for any other message or a size
        outside the caps."""
        if self._request is not None:
            raise RuntimeError("send_predictions() must answer the previous request first")
        while True:
            tag = self._wait_for_message()
            if tag == TAG_INIT:
                self._init = self._receive_init()
            elif tag == TAG_WORK:
                self._request = self._receive_work()
                return self._request
            elif tag == TAG_EXIT:
                self._receive(np.int32, 1, TAG_EXIT, "EXIT")
                self.end_reason = "EXIT"
                return None
            else:
                raise ProtocolError(self.peer, "a message tagged INIT (2), WORK (3) or EXIT (6)",
                                    f"a message tagged {tag}")

    def send_predictions(self, predictions: Sequence[Prediction]) -> None:
        """Checks every prediction (see :func:`~umadrive.protocol.client.wire_results`;
        nothing is sent when one is wrong), then sends RESULT and EXTRA."""
        request = self._request
        if request is None:
            raise RuntimeError("send_predictions() called with no request waiting")
        results = wire_results(predictions, request.structures)
        numeric = np.concatenate([
            np.concatenate(([r.energy], np.ravel(r.forces), np.ravel(r.virial))) for r in results
        ]).astype(np.float64, copy=False)
        extras = np.frombuffer(
            b"".join(np.int32(len(r.extras)).tobytes() + r.extras for r in results), dtype=np.uint8
        )
        MPI = self._mpi
        self._comm.Send([numeric, MPI.DOUBLE], dest=IPI_RANK, tag=TAG_RESULT)
        self._comm.Send([extras, MPI.BYTE], dest=IPI_RANK, tag=TAG_EXTRA)
        self._request = None

    # ------------------------------------------------------------ receiving

    def _wait_for_message(self) -> int:
        """The tag of i-PI's next message, polling with a growing pause."""
        status = self._mpi.Status()
        pause = MIN_POLL_S
        while not self._comm.Iprobe(source=IPI_RANK, tag=self._mpi.ANY_TAG, status=status):
            time.sleep(pause)
            pause = min(2 * pause, MAX_POLL_S)
        return status.Get_tag()

    def _receive(self, dtype: type, expected: int, tag: int, what: str) -> np.ndarray:
        """Receives the next ``tag`` message after checking that it holds exactly
        ``expected`` items of ``dtype`` (the caller has capped ``expected``)."""
        MPI = self._mpi
        mpi_type = {np.int32: MPI.INT, np.float64: MPI.DOUBLE, np.uint8: MPI.BYTE}[dtype]
        status = MPI.Status()
        self._comm.Probe(source=IPI_RANK, tag=tag, status=status)
        count = status.Get_count(mpi_type)
        if count != expected:
            raise ProtocolError(self.peer, f"{what} of {expected} items", f"{count} items")
        buffer = np.empty(expected, dtype=dtype)
        self._comm.Recv([buffer, mpi_type], source=IPI_RANK, tag=tag)
        return buffer

    def _receive_init(self) -> InitInfo:
        rid, length = (int(v) for v in self._receive(np.int32, 2, TAG_INIT, "the INIT header"))
        if not 0 <= length <= msg.MAX_INIT_BYTES:
            raise ProtocolError(self.peer, f"an INIT string of at most {msg.MAX_INIT_BYTES} bytes",
                                f"length {length}")
        raw = self._receive(np.uint8, length, TAG_INIT, "the INIT string").tobytes()
        text = raw.decode("utf-8", errors="replace").replace("\x00", "")
        return InitInfo(rid=rid, text=text, batch_size=msg.parse_batch_size(text, self.peer))

    def _receive_work(self) -> Request:
        nat, count = (int(v) for v in self._receive(np.int32, 2, TAG_WORK, "the WORK header"))
        if self._init is not None:
            limit, why = self._init.batch_size, f"batch_size {self._init.batch_size} in INIT"
        else:
            limit, why = msg.MAX_BATCH_SIZE, "no INIT came first"
        if not 1 <= count <= limit:
            raise ProtocolError(self.peer, f"WORK for 1 to {limit} structures ({why})", f"{count}")
        if not 0 <= nat <= self._max_atoms // count:
            raise ProtocolError(
                self.peer, f"WORK with at most {self._max_atoms // count} atoms per structure "
                "(raise --max-atoms if the system really is that large)", f"nat={nat}",
            )
        body = self._receive(np.float64, count * (_WORK_HEADER + 3 * nat), TAG_WORK,
                             f"WORK for {count} structure(s) of {nat} atoms")
        body = body.reshape(count, _WORK_HEADER + 3 * nat)
        structures = [structure_from_wire(row[:9].reshape(3, 3), row[_WORK_HEADER:].reshape(nat, 3))
                      for row in body]
        batched = self._init is not None and self._init.batch_size > 1
        return Request(structures=structures, init=self._init, batched=batched)


def connect_mpi(*, name: str = "", max_atoms: int = msg.DEFAULT_MAX_ATOMS) -> MpiConnection:
    """Joins i-PI's MPMD job as one driver rank: takes part in the split of
    COMM_WORLD and says HELLO for the ``<ffmpi>`` called ``name`` (empty when
    the input has only one). Raises :class:`ProtocolError` when this process is
    not part of such a job."""
    MPI = _import_mpi()
    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    peer = f"i-PI at MPI rank {IPI_RANK}"
    if size < 2 or rank == IPI_RANK:
        raise ProtocolError(
            peer, "to run as a driver rank > 0 of an MPMD job: `mpiexec -n 1 i-pi input.xml : "
            "-n K umadrive serve --mpi ...`", f"rank {rank} of {size}",
        )
    world.Split(color=DRIVER_COLOR, key=rank).Free()  # i-PI's split; groups are unused here
    hello = np.array([rank, 1, rank], dtype=np.int32)
    world.Send([hello, MPI.INT], dest=IPI_RANK, tag=TAG_HELLO)
    world.Send([np.frombuffer(name.encode("utf-8"), dtype=np.uint8), MPI.BYTE],
               dest=IPI_RANK, tag=TAG_HELLO)
    return MpiConnection(world, name=name, max_atoms=max_atoms)
