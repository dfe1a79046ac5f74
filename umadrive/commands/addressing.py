"""The address flags ``umadrive serve`` and ``umadrive lammps`` share."""

from __future__ import annotations

import argparse

from umadrive.protocol.addresses import DEFAULT_PREFIX


def add_address_arguments(group: argparse._ArgumentGroup, *, host_help: str) -> None:
    """``--unix NAME [--prefix P]`` or ``--host H --port P``."""
    group.add_argument("--unix", metavar="NAME", help="unix socket NAME (path PREFIX+NAME)")
    group.add_argument("--prefix", default=DEFAULT_PREFIX,
                       help="unix socket prefix (default %(default)s)")
    group.add_argument("--host", help=host_help)
    group.add_argument("--port", type=int, help="TCP port")
