"""``umadrive serve`` options for the transport (plain socket, i-PI's shared
memory or MPI) and the device, and the connection they open."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from umadrive.driver.ranks import Rank, launcher_rank, rank_device

if TYPE_CHECKING:
    from umadrive.protocol.client import DriverConnection
    from umadrive.protocol.mpi import MpiConnection


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
    parser.add_argument("--device", default="cpu",
                        help="cpu, cuda or cuda:N; under mpiexec, cuda means cuda:(local rank "
                             "%% visible devices) (default %(default)s)")


def check_transport_arguments(args: argparse.Namespace) -> None:
    """Raises ValueError naming the flags when the address does not fit the
    transport."""
    has_address = args.unix is not None or args.port is not None or args.host is not None
    if args.mpi:
        if has_address or args.shm:
            raise ValueError("--mpi talks to i-PI over MPI: drop --unix/--host/--port and --shm")
    elif args.shm:
        if args.unix is None or args.port is not None or args.host is not None:
            raise ValueError("--shm needs the unix socket of i-PI's <ffsocket mode='shm'>: "
                             "give --unix NAME (and --prefix), not --host/--port")
    elif (args.unix is None) == (args.port is None):
        raise ValueError("give exactly one address: --unix NAME, or --port P [--host H] "
                         "(or --mpi under mpiexec)")
    if args.mpi_name and not args.mpi:
        raise ValueError(f"--mpi-name {args.mpi_name!r} only applies with --mpi")


def process_rank() -> Rank | None:
    """This process's rank when an MPI launcher started it, from its environment."""
    return launcher_rank(os.environ)


def choose_device(requested: str, rank: Rank | None) -> str:
    """``--device`` resolved for this rank (see :func:`rank_device`); CUDA devices
    are counted with torch, imported only when CUDA is asked for."""
    cuda_devices = 0
    if requested.startswith("cuda"):
        try:
            import torch
        except ImportError:
            pass
        else:
            cuda_devices = torch.cuda.device_count()
    return rank_device(requested, rank, cuda_devices)


def open_connection(args: argparse.Namespace) -> DriverConnection | MpiConnection:
    """The connection the flags ask for (checked by :func:`check_transport_arguments`)."""
    if args.mpi:
        from umadrive.protocol.mpi import connect_mpi

        return connect_mpi(name=args.mpi_name, max_atoms=args.max_atoms)
    if args.shm:
        from umadrive.protocol.shm import connect_shm

        return connect_shm(unix=args.unix, prefix=args.prefix, timeout=args.connect_timeout,
                           max_atoms=args.max_atoms)
    from umadrive.protocol import connect

    return connect(unix=args.unix, prefix=args.prefix, host=args.host, port=args.port,
                   timeout=args.connect_timeout, max_atoms=args.max_atoms)
