"""``umadrive lammps IN.lmp``: run a LAMMPS input script whose forces come from a
running ``umadrive serve``.

The script declares ``fix umadrive all external pf/callback 1 1`` (and, usually,
``pair_style zero CUTOFF`` + ``pair_coeff * *`` so that LAMMPS computes nothing
itself). This command listens on the i-PI socket, waits for ``umadrive serve`` to
connect, and answers every force call of the fix from it. With
``--write-template FILE`` it instead writes the script's atoms (tag order, before
the first run) as the template for ``umadrive serve --structure FILE`` and exits.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from umadrive.commands.addressing import add_address_arguments
from umadrive.lammps.errors import LammpsInputError

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("script", type=Path, help="LAMMPS input script (units metal or real)")
    address = parser.add_argument_group("where umadrive serve connects (i-PI socket)")
    add_address_arguments(address, host_help="TCP address to listen on, e.g. localhost")
    address.add_argument(
        "--accept-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds to wait for umadrive serve to connect (default: %(default)s)",
    )
    parser.add_argument(
        "--types",
        metavar="EL,EL,...",
        help="element of each LAMMPS atom type in type order, e.g. Cu,Au "
        "(default: recognised from the per-type masses within 0.1 amu)",
    )
    parser.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="define a LAMMPS index variable, like `lmp -var KEY VALUE` (repeatable)",
    )
    parser.add_argument(
        "--template",
        type=Path,
        metavar="FILE",
        help="the structure file given to `umadrive serve --structure`: checked to hold "
        "the same elements in the same (tag) order before any step runs",
    )
    parser.add_argument(
        "--write-template",
        type=Path,
        metavar="FILE",
        help="write the script's atoms before its first run as a umadrive template "
        "(any ase.io format, e.g. .extxyz) and exit without running",
    )
    parser.add_argument(
        "--allow-no-stress",
        action="store_true",
        help="when the model computes no stress for the periodic box, give LAMMPS a zero "
        "virial (with a warning) instead of stopping; right only when nothing uses the "
        "pressure (no fix npt/nph)",
    )
    parser.add_argument(
        "--log", default="log.lammps", help="LAMMPS log file, 'none' for none (default: %(default)s)"
    )


def _lammps_args(args: argparse.Namespace) -> list[str]:
    cmdargs = ["-log", args.log, "-nocite"]
    for item in args.var:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LammpsInputError(f"--var {item!r} is not KEY=VALUE; write e.g. --var T=300")
        cmdargs += ["-var", key, value]
    return cmdargs


def _server_address(args: argparse.Namespace) -> dict[str, Any]:
    """ForceServer's address keywords, checked before LAMMPS starts."""
    from umadrive.protocol.addresses import resolve_address

    address = {"unix": args.unix, "prefix": args.prefix, "host": args.host, "port": args.port}
    try:
        resolve_address(**address)
    except ValueError as error:
        raise LammpsInputError(
            f"{error}; umadrive serve connects to `--unix NAME` or `--host HOST --port PORT` "
            "(or use --write-template FILE to only write a template)"
        ) from None
    return address


def _check_template(path: Path, symbols: list[str]) -> None:
    """The template that umadrive serve uses must list ``symbols`` in order."""
    import ase.io

    template = ase.io.read(path).get_chemical_symbols()
    if len(template) != len(symbols):
        raise LammpsInputError(
            f"template {path} has {len(template)} atoms but LAMMPS has {len(symbols)}; "
            f"write the matching template with `umadrive lammps SCRIPT --write-template {path}`"
        )
    for index, (expected, found) in enumerate(zip(symbols, template)):
        if expected != found:
            raise LammpsInputError(
                f"template {path} has {found} at position {index} but LAMMPS atom "
                f"{index + 1} in tag order is {expected}; write the matching template with "
                f"`umadrive lammps SCRIPT --write-template {path}`"
            )


def _commands(lmp: Any, text: str, script: Path, part: str) -> None:
    """Run ``text`` in LAMMPS; a LAMMPS error becomes a LammpsInputError naming it."""
    try:
        lmp.commands_string(text)
    except Exception as error:  # the lammps module raises plain Exception
        message = str(error).strip()
        if "callback function not set" in message:
            message += (
                "; a run inside an include file or an `if` command came before the bridge "
                "could attach: put a plain `run` command in the main script first"
            )
        raise LammpsInputError(f"LAMMPS stopped in the {part} of {script}: {message}") from error


def _fail(lmp: Any, server: Any, timestep: int, error: BaseException) -> NoReturn:
    """End the process from inside a LAMMPS callback (see umadrive.lammps.bridge)."""
    from umadrive.protocol.errors import ProtocolError

    lmp.flush_buffers()
    hint = "; umadrive serve's output says why it stopped" if isinstance(error, ProtocolError) else ""
    print(f"umadrive lammps: error at step {timestep}: {error}{hint}", file=sys.stderr, flush=True)
    try:
        server.close()
    except Exception:  # noqa: BLE001 - the connection may be what failed
        pass
    sys.stdout.flush()
    os._exit(EXIT_BAD_INPUT if isinstance(error, LammpsInputError) else EXIT_FAILURE)


def _serve(
    lmp: Any, args: argparse.Namespace, address: dict[str, Any], dynamics: str, **bridge_options: Any
) -> None:
    """Listen, wait for umadrive serve, and run the rest of the script with the
    bridge attached; EXIT to the server at the end."""
    from umadrive.lammps.bridge import LammpsBridge
    from umadrive.protocol.server import ForceServer

    with ForceServer(**address) as server:
        bridge = LammpsBridge(
            lmp,
            compute=lambda structure: server.compute([structure])[0],
            on_failure=lambda step, error: _fail(lmp, server, step, error),
            **bridge_options,
        )
        print(f"umadrive lammps: waiting for umadrive serve on {server.address}", file=sys.stderr,
              flush=True)
        server.accept(timeout=args.accept_timeout)
        bridge.attach()
        _commands(lmp, dynamics, args.script, "run part")
    if bridge.calls:
        per_call = 1e3 * bridge.compute_seconds / bridge.calls
        print(
            f"umadrive lammps: {bridge.calls} force calls, "
            f"{per_call:.3f} ms each round trip to umadrive serve",
            file=sys.stderr,
        )


def _run(args: argparse.Namespace) -> int:
    import ase.io

    from umadrive.lammps.script import check_external_fix, split_script
    from umadrive.lammps.species import parse_type_names, type_elements
    from umadrive.lammps.system import read_system, type_masses
    from umadrive.lammps.units import lammps_units
    from umadrive.lammps.mpich_runtime import import_lammps
    from umadrive.mpich_shm import unlink_mapped_segments

    writing_template = args.write_template is not None
    address = None if writing_template else _server_address(args)
    names = parse_type_names(args.types) if args.types else None
    script = split_script(args.script.read_text())
    fix = None if writing_template else check_external_fix(script)
    with import_lammps().lammps(cmdargs=_lammps_args(args)) as lmp:
        unlink_mapped_segments()  # one process: attached; nothing is left in /dev/shm on a failure
        _commands(lmp, script.setup, args.script, "setup part (before the first run)")
        units = lammps_units(lmp.extract_global("units"))
        elements = type_elements(type_masses(lmp), names)
        system = read_system(lmp, units, elements)
        for atom_type, symbol in enumerate(elements, start=1):
            count = int((system.types == atom_type).sum())
            print(f"umadrive lammps: type {atom_type} = {symbol} ({count} atoms)", file=sys.stderr)
        if writing_template:
            ase.io.write(args.write_template, system.to_atoms())
            print(f"umadrive lammps: wrote template {args.write_template}", file=sys.stderr)
            return 0
        if args.template is not None:
            _check_template(args.template, system.symbols)
        _serve(lmp, args, address, script.dynamics, fix_id=fix.fix_id, system=system, units=units,
               allow_no_stress=args.allow_no_stress)
    return 0


def run(args: argparse.Namespace) -> int:
    from umadrive.protocol.errors import ProtocolError

    try:
        return _run(args)
    except LammpsInputError as error:
        print(f"umadrive lammps: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ProtocolError as error:
        print(f"umadrive lammps: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
