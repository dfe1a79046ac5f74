"""``umadrive serve`` options for the transport (plain socket, i-PI's shared
memory or MPI), the device each MPI rank takes, and the request pool they open."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from umadrive.driver.ranks import Rank, launcher_rank, rank_device

if TYPE_CHECKING:
    from umadrive.driver.batching import RequestPool
    from umadrive.driver.lifecycle import StopSignal
    from umadrive.driver.stats import ServeLog
    from umadrive.protocol.addresses import Address


def add_transport_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("transport (default: the socket protocol at the address)")
    group.add_argument("--shm", action="store_true",
                       help="i-PI's <ffsocket mode='shm'>: control messages over the unix socket "
                            "--unix, arrays in i-PI's shared memory (same node)")
    group.add_argument("--mpi", action="store_true",
                       help="i-PI's <ffmpi>: be the driver ranks of `mpiexec -n 1 i-pi input.xml "
                            ": -n K umadrive serve --mpi ...` (no address; needs mpi4py)")
    group.add_argument("--mpi-name", default="", metavar="NAME",
                       help="with --mpi: the <ffmpi name='NAME'> to serve when the input has "
                            "several (default: the only one)")


def transport_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the address and transport flags together, or None."""
    if args.mpi_name and not args.mpi:
        return f"--mpi-name {args.mpi_name!r} only applies with --mpi"
    if args.mpi:
        if args.unix is not None or args.port is not None or args.host is not None or args.shm:
            return "--mpi talks to i-PI over MPI: drop --unix/--host/--port and --shm"
        if args.connections != 1:
            return (f"--mpi --connections {args.connections}: i-PI's <ffmpi> gives each driver "
                    "rank one slot; start more ranks instead (`... : -n K umadrive serve --mpi`) "
                    "or use <batch_size>")
        if args.persist:
            return ("--mpi --persist: a driver rank lives and ends with i-PI's MPI job; drop "
                    "--persist (it is for socket servers that come and go)")
        return None
    if args.shm:
        if args.unix is None or args.port is not None or args.host is not None:
            return ("--shm needs the unix socket of i-PI's <ffsocket mode='shm'>: give --unix "
                    "NAME (and --prefix), not --host/--port")
        return None
    if (args.unix is None) == (args.port is None):
        return ("give exactly one address: --unix NAME, or --port P [--host H] (or --mpi under "
                "mpiexec)")
    return None


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


def open_pool(args: argparse.Namespace, address: Address | None, stop: StopSignal,
              serve_log: ServeLog, *, expected_atoms: int | None = None) -> RequestPool | None:
    """The transport the flags ask for, connected: connections to the server at
    ``address`` (plain or shared memory), or this MPI rank of i-PI's job
    (``address`` None). Returns None if a stop signal came first; raises
    ProtocolError/OSError when it cannot be opened."""
    if args.mpi:
        from umadrive.driver.mpi_pool import MpiPool
        from umadrive.protocol.mpi import connect_mpi

        connection = connect_mpi(name=args.mpi_name, max_atoms=args.max_atoms)
        serve_log.event("connected", f"connected to {connection.peer} as MPI rank "
                        f"{connection.rank}", transport="mpi", peer=connection.peer,
                        rank=connection.rank)
        return MpiPool(connection)
    from umadrive.driver.connections import ConnectionPool, open_connections

    connections = open_connections(address, args.connections, stop=stop, max_atoms=args.max_atoms,
                                   expected_atoms=expected_atoms,
                                   timeout=None if args.persist else args.connect_timeout,
                                   shared_memory=args.shm)
    if connections is None:
        return None
    count = f"{len(connections)} connection{'s' if len(connections) > 1 else ''}"
    serve_log.event("connected",
                    f"connected to {address} ({'shared memory, ' if args.shm else ''}{count})",
                    transport="shm" if args.shm else "socket", address=str(address),
                    connections=len(connections))
    return ConnectionPool(connections, stop, batch_window=args.batch_window / 1e3)
