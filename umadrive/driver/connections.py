"""The socket side of the driver (the plain protocol, or i-PI's shared memory
whose control messages also travel on the socket): open N connections to one
server, wait on all of them at once with :mod:`selectors`, and hand over every
request that is waiting at the same moment.

i-PI gives each connection one bead (or, with ``batch_size``, a batch of beads);
the requests that arrive together become one forward pass in
:mod:`umadrive.driver.batching`.
"""

from __future__ import annotations

import logging
import selectors
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from umadrive.driver.lifecycle import StopFlag
from umadrive.protocol import DriverConnection, ProtocolError, Request, connect
from umadrive.protocol.addresses import Address
from umadrive.protocol.errors import ReadInterrupted
from umadrive.protocol.shm import connect_shm

if TYPE_CHECKING:
    from umadrive.protocol.mpi import MpiConnection

log = logging.getLogger("umadrive.driver")

MAX_RETRY_INTERVAL_S = 2.0
_FIRST_RETRY_INTERVAL_S = 0.1
_HANDSHAKE_WAIT_S = 5.0


@dataclass(frozen=True)
class Pending:
    """A request read from ``connection`` (a socket connection, or an MPI rank's
    with ``--mpi``) that waits for its answer."""

    connection: DriverConnection | MpiConnection
    request: Request


@dataclass(frozen=True)
class Gathered:
    """The requests waiting at one moment. wait_s: idle time before the first
    arrived; receive_s: time spent reading them."""

    pending: list[Pending]
    wait_s: float
    receive_s: float


class ConnectionPool:
    """Connections to one server, served together until each has ended.
    batch_window: seconds to wait for the connections that sent requests
    before (checked by :class:`~umadrive.driver.options.ServeOptions`).

    ``outcome`` after the run: ``"EXIT"`` (the server said so), ``"EOF"`` (the
    server closed between steps, which is how ASE and LAMMPS end a run) or
    ``"failed"`` (a protocol error, a server gone mid-exchange or one that
    promised EXIT and closed instead, or a request this side refused).
    ``failures``: the error messages of the run; each is logged once, and not
    at all when in ``quiet`` (the failures of the run before).

    EXIT on one connection ends the run on all: the server is ending, and its
    other connections may see it close without EXIT of their own.
    """

    _RANK = {"EXIT": 0, "EOF": 1, "failed": 2}

    def __init__(self, connections: list[DriverConnection], stop: StopFlag, *,
                 batch_window: float = 0.0, quiet: frozenset[str] = frozenset()) -> None:
        self._stop = stop
        self._batch_window = batch_window
        self._quiet = quiet
        self.failures: list[str] = []
        stop.on_forced_exit.append(self._abandon)
        self._active: set[DriverConnection] = set()  # have sent a request in this run
        self._selector = selectors.DefaultSelector()
        self._selector.register(stop, selectors.EVENT_READ)
        for connection in connections:
            self._selector.register(connection, selectors.EVENT_READ)
        self._idle = set(connections)  # open, and no request of theirs is being computed
        self._busy: set[DriverConnection] = set()
        self.outcome = "EXIT"
        self._batched_seen = False

    def gather(self) -> Gathered:
        """Blocks until at least one request arrived, then takes every request
        already waiting on the other connections. Then, for up to ``batch_window``
        seconds, waits for the connections that have sent requests before (i-PI
        hands out a step's beads nearly, not exactly, at once; connections it
        never used are not waited for). Returns no requests when every
        connection has ended or a stop signal arrived."""
        pending: list[Pending] = []
        start = first = time.perf_counter()
        while self._idle and self._stop.requested is None:
            timeout = None
            if pending:
                timeout = 0.0
                if self._active & self._idle:
                    timeout = max(first + self._batch_window - time.perf_counter(), 0.0)
            events = self._selector.select(timeout)
            if not events:
                break
            for key, _ in events:
                connection = key.fileobj
                if connection is self._stop or connection not in self._idle:
                    continue
                request = self._read(connection)
                if request is not None:
                    if not pending:
                        first = time.perf_counter()
                    pending.append(Pending(connection, request))
                    self._active.add(connection)
                    self._idle.discard(connection)
                    self._busy.add(connection)
                    self._selector.unregister(connection)
        end = time.perf_counter()
        pending = [p for p in pending if p.connection in self._busy]  # none after an EXIT
        return Gathered(pending, wait_s=first - start, receive_s=end - first)

    def deliver(self, answered: list[Pending]) -> None:
        """Serves each answered connection until the server has fetched the reply
        (GETFORCE), then waits on it again."""
        for pending in answered:
            connection = pending.connection
            try:
                while connection.state == "HAVEDATA" and connection.end_reason is None:
                    connection.read_message()
            except ReadInterrupted as error:
                log.info("%s; closing, the answer not taken", error)
                self._forget(connection)
                continue
            except ProtocolError as error:
                self._fail(connection, f"{error} (the server went away before taking the answer)")
                continue
            self._busy.discard(connection)
            if connection.end_reason is not None:
                self._end(connection)
            else:
                self._idle.add(connection)
                self._selector.register(connection, selectors.EVENT_READ)

    def drop(self, pending: Pending, reason: str) -> None:
        """Closes the connection of a request that is not answered (clean end of
        stream: i-PI requeues the request for another driver)."""
        self._fail(pending.connection, f"{reason}; closing {pending.connection.peer} without "
                                       "answering")

    def close(self) -> None:
        """Closes every connection still open (replies not yet fetched are lost:
        call :meth:`deliver` first)."""
        self._stop.on_forced_exit.remove(self._abandon)
        for connection in list(self._idle | self._busy):
            self._forget(connection)
        self._selector.close()

    def _abandon(self) -> None:
        """Closes every connection from another thread, for a forced exit: the
        server sees an end of stream (unread input is drained), never a reset."""
        for connection in list(self._idle) + list(self._busy):
            connection.close()

    def _read(self, connection: DriverConnection) -> Request | None:
        try:
            request = connection.read_message()
        except ReadInterrupted as error:
            log.info("%s; closing without answering", error)
            self._forget(connection)
            return None
        except ProtocolError as error:
            self._fail(connection, f"{error}")
            return None
        if connection.end_reason == "EXIT":
            self._worsen("EXIT")
            for other in list(self._idle | self._busy):
                self._forget(other)
            return None
        if connection.end_reason is not None:
            self._end(connection)
        if request is not None and request.batched and not self._batched_seen:
            self._batched_seen = True
            log.info("batched protocol, %d structures per request", len(request.structures))
        return request

    def _end(self, connection: DriverConnection) -> None:
        if connection.end_reason == "EOF" and _promised_exit(connection):
            self._fail(connection, f"{connection.peer} closed the connection without EXIT: an "
                                   "i-PI server always sends EXIT when it ends, so it died or "
                                   "was killed")
            return
        self._worsen(connection.end_reason or "EOF")
        self._forget(connection)

    def _fail(self, connection: DriverConnection, message: str) -> None:
        if message not in self._quiet and message not in self.failures:
            log.error("%s", message)  # once: i-PI hands a refused request to the next connection
        self.failures.append(message)
        self._worsen("failed")
        self._forget(connection)

    def _worsen(self, outcome: str) -> None:
        if self._RANK[outcome] > self._RANK[self.outcome]:
            self.outcome = outcome

    def _forget(self, connection: DriverConnection) -> None:
        self._active.discard(connection)
        if connection in self._idle:
            self._selector.unregister(connection)
        self._idle.discard(connection)
        self._busy.discard(connection)
        connection.close()


def _promised_exit(connection: DriverConnection) -> bool:
    """Whether this server ends runs with EXIT. i-PI does, and its INIT string
    always has content (at least one space); ASE's SocketIOCalculator sends an
    INIT string of one NUL byte (read as empty) and just closes; LAMMPS sends no
    INIT and just closes."""
    return connection.init is not None and connection.init.text != ""


def open_connections(address: Address, count: int, *, stop: StopFlag, timeout: float | None,
                     max_atoms: int, expected_atoms: int | None = None,
                     shared_memory: bool = False) -> list[DriverConnection] | None:
    """``count`` connections to the server at ``address`` (with
    ``shared_memory``, i-PI's ``<ffsocket mode='shm'>`` at a unix ``address``);
    ``expected_atoms``: the only atom count a request may have.
    Retries while nothing listens there, with intervals doubling from 0.1 s to
    2 s, for up to ``timeout`` seconds (None: until a stop signal). Returns None
    when a stop signal arrived; raises :class:`ProtocolError` when the time is up.
    A connection after the first that finds nothing listening, or a server
    that closes at once, counts as nothing listening (a server that is ending,
    e.g. an i-PI that just sent EXIT): all are closed and tried again.

    With several connections, each one answers the server's first STATUS before
    the next connects: i-PI hand-shakes every client it accepts before it
    accepts the next, and its listen backlog holds at most 5, so connecting all
    first would leave both sides waiting on each other."""
    if shared_memory and address.path is None:
        raise ValueError(f"shared memory needs i-PI's unix control socket, not {address}")
    deadline = None if timeout is None else time.monotonic() + timeout
    interval = _FIRST_RETRY_INTERVAL_S
    where = ({"unix": address.path, "prefix": ""} if address.path is not None
             else {"host": address.host, "port": address.port})
    connect_one = connect_shm if shared_memory else connect
    while stop.requested is None:
        connections: list[DriverConnection] = []
        try:
            for _ in range(count):
                try:
                    connection = connect_one(**where, timeout=0, max_atoms=max_atoms,
                                             expected_atoms=expected_atoms, interrupt=stop)
                except ProtocolError:  # refused, or no socket file: see connect_with_retry
                    raise _NothingListening from None
                connections.append(connection)
                if count > 1:
                    _answer_first_status(connections[-1])
            return connections
        except _NothingListening:
            # nothing listens, or no longer: a server that is ending (e.g. a
            # finished i-PI reached by a --persist reconnect) counts as none
            for connection in connections:
                connection.close()
            if deadline is not None and time.monotonic() >= deadline:
                raise ProtocolError(
                    str(address), f"a listening server within {timeout:g} s (start i-PI/ASE "
                    "first, check the address, or raise --connect-timeout)", "nothing listening"
                ) from None
        except ProtocolError as error:
            for connection in connections:
                connection.close()
            if isinstance(error, ReadInterrupted):
                return None  # stopped during a handshake
            raise  # the server is there but broke off: not a reason to wait
        if interval == _FIRST_RETRY_INTERVAL_S:
            log.info("waiting for a server at %s", address)
        wait = interval if deadline is None else min(interval, max(deadline - time.monotonic(), 0))
        if stop.wait(wait):
            break
        interval = min(2 * interval, MAX_RETRY_INTERVAL_S)
    return None


class _NothingListening(Exception):
    """No server to connect to (any more) at the address."""


def _answer_first_status(connection: DriverConnection) -> None:
    with selectors.DefaultSelector() as selector:
        selector.register(connection, selectors.EVENT_READ)
        if not selector.select(_HANDSHAKE_WAIT_S):
            return  # a server that does not hand-shake on accept: nothing to answer
    if connection.read_message() is not None:
        raise ProtocolError(connection.peer, "STATUS as the first message (--connections N > 1 "
                                             "is for i-PI)", "POSDATA")
    if connection.end_reason is not None:
        raise _NothingListening  # a server ending: it closed (or sent EXIT) at once
