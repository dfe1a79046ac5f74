"""The transport :class:`~umadrive.driver.options.ServeOptions` asks for (plain
socket, i-PI's shared memory or MPI), opened as a request pool, and the device
each MPI rank takes."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from umadrive.driver.ranks import Rank, launcher_rank, rank_device
from umadrive.mpich_shm import unlink_mapped_segments

if TYPE_CHECKING:
    from umadrive.driver.batching import RequestPool
    from umadrive.driver.lifecycle import StopFlag
    from umadrive.driver.options import ServeOptions
    from umadrive.driver.stats import ServeLog
    from umadrive.protocol.addresses import Address


def process_rank() -> Rank | None:
    """This process's rank when an MPI launcher started it, from its environment."""
    return launcher_rank(os.environ)


def choose_device(requested: str, rank: Rank | None) -> str:
    """``--device`` for this rank (see :func:`rank_device`); CUDA devices are
    counted with torch, imported only for ``cuda``. The result is checked where
    the model loads."""
    cuda_devices = 0
    if requested == "cuda":
        try:
            import torch
        except ImportError:
            pass
        else:
            cuda_devices = torch.cuda.device_count()
    return rank_device(requested, rank, cuda_devices)


def open_pool(options: ServeOptions, address: Address | None, stop: StopFlag,
              serve_log: ServeLog, *, expected_atoms: int | None = None,
              quiet: frozenset[str] = frozenset()) -> RequestPool | None:
    """The transport ``options`` ask for, connected: connections to the server at
    ``address`` (plain or shared memory), or this MPI rank of i-PI's job
    (``address`` None). ``quiet``: failures of the run before, not logged again
    (nor the connection). Returns None if a stop came first; raises
    ProtocolError/OSError when it cannot be opened."""
    if options.transport == "mpi":
        from umadrive.driver.mpi_pool import MpiPool
        from umadrive.protocol.mpi import connect_mpi

        connection = connect_mpi(name=options.mpi_name, max_atoms=options.max_atoms)
        stop.on_forced_exit.append(unlink_mapped_segments)  # the job never finalizes then
        serve_log.event("connected", f"connected to {connection.peer} as MPI rank "
                        f"{connection.rank}", transport="mpi", peer=connection.peer,
                        rank=connection.rank)
        return MpiPool(connection)
    from umadrive.driver.connections import ConnectionPool, open_connections

    shm = options.transport == "shm"
    connections = open_connections(address, options.connections, stop=stop,
                                   max_atoms=options.max_atoms, expected_atoms=expected_atoms,
                                   timeout=None if options.persist else options.connect_timeout_s,
                                   shared_memory=shm)
    if connections is None:
        return None
    count = f"{len(connections)} connection{'s' if len(connections) > 1 else ''}"
    serve_log.event("connected",
                    f"connected to {address} ({'shared memory, ' if shm else ''}{count})",
                    transport=options.transport, address=str(address),
                    connections=len(connections), quiet=bool(quiet))
    return ConnectionPool(connections, stop, batch_window=options.batch_window_ms / 1e3,
                          quiet=quiet)
