"""How the driver serves: :class:`ServeOptions`, the one place the serving
options are checked (the ``umadrive serve`` flags map onto its fields one to one)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from umadrive.protocol.messages import DEFAULT_MAX_ATOMS

if TYPE_CHECKING:
    from umadrive.protocol.addresses import Address

TRANSPORTS = ("socket", "shm", "mpi")
# field, its umadrive serve flag, the smallest value allowed, that value in words
_LOWER_LIMITS = (
    ("connections", "--connections", 1, "1"),
    ("batch_window_ms", "--batch-window", 0, "0 ms"),
    ("connect_timeout_s", "--connect-timeout", 0, "0 s"),
    ("max_atoms", "--max-atoms", 1, "1"),
    ("log_every", "--log-every", 0, "0 (no status lines)"),
    ("stop_grace_s", "--stop-grace", 0, "0 s"),
)
_INTEGERS = ("connections", "max_atoms", "log_every")


class ServeOptionsError(ValueError):
    """Serving options that do not fit; the message names the value, the limit and the fix."""


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    """How :func:`umadrive.driver.serve` talks to the engine.

    transport: ``"socket"`` (the i-PI protocol at an address), ``"shm"`` (i-PI's
        ``<ffsocket mode='shm'>``: control messages over a unix socket, arrays
        in shared memory) or ``"mpi"`` (a driver rank of i-PI's ``<ffmpi>``
        job; no address). ``--shm``, ``--mpi``.
    mpi_name: with ``"mpi"``, the ``<ffmpi name=...>`` to serve ("": the only one).
    connections: connections opened to the server (i-PI gives each a bead);
        requests waiting together are computed in one forward pass.
    batch_window_ms: after a request arrives, wait up to this long (ms) for the
        connections that sent requests before.
    persist: after the engine ends, wait for the next one (model still loaded).
    connect_timeout_s: keep trying to connect this long (s); no limit with ``persist``.
    max_atoms: refuse requests announcing more atoms.
    warmup: one prediction on the template before connecting.
    log_every: a status line every this many forward passes (0: none).
    log_json: a file the status lines, events and summary are appended to as JSON lines.
    extras: send the model name, step, model time and step size with every result.
    pbc: the periodicity to compute with, per lattice direction, instead of the
        template's (``--pbc TTF``); None: the template's, and a request whose
        cell differs (a lattice vector where the template has none, or none
        where it has one) is refused.
    stop_grace_s: after a stop signal, how long the request in flight may take
        before ``umadrive serve`` ends without answering it (exit status 3;
        inf: no limit, a second signal still ends it). Used by the command's
        :class:`~umadrive.driver.lifecycle.StopSignal`; an embedding program
        stops :func:`~umadrive.driver.serve` through its own ``StopFlag``.
    """

    transport: str = "socket"
    mpi_name: str = ""
    connections: int = 1
    batch_window_ms: float = 5.0
    persist: bool = False
    connect_timeout_s: float = 60.0
    max_atoms: int = DEFAULT_MAX_ATOMS
    warmup: bool = False
    log_every: int = 100
    log_json: str | os.PathLike | None = None
    extras: bool = False
    pbc: tuple[bool, bool, bool] | None = None
    stop_grace_s: float = 30.0

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ServeOptionsError(f"transport={self.transport!r}: expected one of {TRANSPORTS}")
        for name, flag, low, low_text in _LOWER_LIMITS:
            value = getattr(self, name)
            if name in _INTEGERS and (isinstance(value, bool) or not isinstance(value, int)):
                raise ServeOptionsError(f"{name}={value!r} ({flag}): expected an integer")
            if value < low:
                raise ServeOptionsError(f"{name}={value} ({flag}): expected {low_text} or more")
        if self.stop_grace_s != self.stop_grace_s:  # NaN passes the lower limit
            raise ServeOptionsError("stop_grace_s=nan (--stop-grace): expected 0 s or more "
                                    "(inf: no limit)")
        if self.pbc is not None and (len(self.pbc) != 3
                                     or not all(isinstance(p, bool) for p in self.pbc)):
            raise ServeOptionsError(f"pbc={self.pbc!r} (--pbc): expected three booleans, one per "
                                    "lattice direction (on the command line e.g. TTT or TTF)")
        if self.mpi_name and self.transport != "mpi":
            raise ServeOptionsError(f"mpi_name={self.mpi_name!r} (--mpi-name) only applies with "
                                    "transport='mpi' (--mpi)")
        if self.transport == "mpi" and self.connections != 1:
            raise ServeOptionsError(
                f"transport='mpi' with connections={self.connections} (--mpi --connections): "
                "i-PI's <ffmpi> gives each driver rank one slot; start more ranks instead "
                "(`... : -n K umadrive serve --mpi`) or use <batch_size>")
        if self.transport == "mpi" and self.persist:
            raise ServeOptionsError(
                "transport='mpi' with persist=True (--mpi --persist): a driver rank lives and "
                "ends with i-PI's MPI job; drop persist (it is for socket servers that come "
                "and go)")

    def check_address(self, address: Address | None) -> None:
        """Whether ``address`` fits the transport: none for ``"mpi"``, a unix
        socket for ``"shm"``, any address for ``"socket"``."""
        if self.transport == "mpi":
            if address is not None:
                raise ServeOptionsError(f"transport='mpi' (--mpi) talks to i-PI over MPI: give "
                                        f"no address (drop --unix/--host/--port), not {address}")
        elif self.transport == "shm":
            if address is None or address.path is None:
                raise ServeOptionsError(
                    f"transport='shm' (--shm) needs the unix socket of i-PI's <ffsocket "
                    f"mode='shm'>: give --unix NAME (and --prefix), not {address}")
        elif address is None:
            raise ServeOptionsError("no address: give --unix NAME, or --port P [--host H] (or "
                                    "--mpi under mpiexec)")
