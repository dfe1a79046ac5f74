"""The ``umadrive`` command line: ``umadrive serve | demo | bench | lammps | compile | info | plot``.

Each sub-command lives in its own module of :mod:`umadrive.commands`, which
provides ``configure(parser: argparse.ArgumentParser) -> None`` (adds its
options; imports nothing heavy) and ``run(args: argparse.Namespace) -> int``
(the exit status).
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from umadrive import __version__
from umadrive.commands import bench, demo, info, lammps, plot, serve
from umadrive.commands import compile as compile_command

# sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[ModuleType, str]] = {
    "serve": (serve, "answer an MD engine's force requests over the i-PI protocol"),
    "demo": (demo, "run a short i-PI (or ASE) simulation served by umadrive"),
    "bench": (bench, "time the inference settings (default, turbo, each setting)"),
    "compile": (compile_command, "compile a UMA model ahead of a job into the kernel cache"),
    "info": (info, "print versions, devices and where models are looked for"),
    "lammps": (lammps, "run a LAMMPS input script with forces from umadrive serve"),
    "plot": (plot, "draw a run's energy, temperature, drift and step time as a PNG"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="umadrive",
        description="A long-running i-PI-protocol force server for UMA-family potentials.",
    )
    parser.add_argument("--version", action="version", version=f"umadrive {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(command_parser)
        command_parser.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return int(args._module.run(args))
