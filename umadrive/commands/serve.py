"""``umadrive serve``: load the model once, connect to an MD engine and answer its
force requests until it ends (or, with ``--persist``, until a stop signal).

The serving itself is :func:`umadrive.driver.serve`; this module maps the flags
onto :class:`~umadrive.driver.ServeOptions` and loads the backend.

Exit status: 0 after EXIT, when an engine that never sent INIT (ASE, LAMMPS)
closes between steps, or after SIGTERM/SIGINT (the request in flight is answered
first); 3 after a second SIGTERM/SIGINT, or when the request in flight outlasts
``--stop-grace`` (it is not answered; the connections are closed cleanly); 1 when a request is refused, the peer breaks the protocol or dies, the
model fails, or its result cannot be sent (nothing is sent in these cases;
with ``--mpi`` the whole MPI job is aborted instead, since i-PI would wait
forever for the answer); 2 for bad command-line values.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time

from umadrive.commands.addressing import add_address_arguments
from umadrive.driver.options import ServeOptions
from umadrive.driver.transports import choose_device, process_rank
from umadrive.process_memory import keep_freed_memory
from umadrive.protocol.addresses import Address, resolve_address
from umadrive.protocol.messages import DEFAULT_MAX_ATOMS

log = logging.getLogger("umadrive.driver")


def configure(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    model.add_argument("-m", "--model", required=True, metavar="PATH|NAME|fairchem:...|ase:...",
                       help="a UMA checkpoint (path or name), 'fairchem:PATH_OR_NAME' (the "
                            "same, run by fairchem-core), 'ase:emt' or "
                            "'ase:package.module:Class' (any ASE calculator)")
    model.add_argument("--structure", required=True, metavar="FILE",
                       help="template read with ase.io.read: species, atom order, periodicity")
    model.add_argument("--task", help="UMA dataset to predict for, e.g. omat, omol, oc20, odac, omc "
                                      "(1.2.x adds oc22, oc25; required when the model has "
                                      "several)")
    model.add_argument("--charge", type=int, default=0, help="total charge, UMA (default 0)")
    model.add_argument("--spin", type=int, default=None,
                       help="spin multiplicity, UMA (default 1 for omol, else 0 = unset: "
                            "umadrive.model.calculator.default_spin)")
    model.add_argument("--mode", default="default", metavar="default|turbo|FILE.json",
                       help="UMA inference settings: a preset or a JSON file of settings")
    model.add_argument("--device", default="cpu",
                       help="cpu, cuda or cuda:N (default cpu); under an MPI launcher, cuda "
                            "means cuda:(local rank %% visible devices)")
    model.add_argument("--warmup", action="store_true",
                       help="run one prediction on the template before connecting (turbo "
                            "compiles in the background with or without it)")
    model.add_argument("--memory-budget", type=memory_size, metavar="SIZE",
                       help="memory a step's edge activations may take before activation "
                            "checkpointing recomputes them in chunks, e.g. 8GiB or 512MiB "
                            "(default: half the memory free at start; UMA modes with "
                            "activation_checkpointing)")
    model.add_argument("--model-kwargs", default="{}", metavar="JSON",
                       help="keyword arguments for an ASE calculator, as a JSON object")
    model.add_argument("--pbc", type=_pbc_flags, metavar="TTT|FFF|...",
                       help="periodicity per lattice direction to compute with, instead of the "
                            "template's; without it a request whose cell differs from the "
                            "template's periodicity is refused")
    where = parser.add_argument_group("address (unix socket, or --host/--port for TCP)")
    add_address_arguments(where, host_help="TCP host (default localhost when --port is given)")
    _add_py_driver_arguments(parser)
    _add_transport_arguments(parser)
    serving = parser.add_argument_group("serving")
    serving.add_argument("--connections", type=int, default=1, metavar="N",
                         help="open N connections to the server (i-PI gives each one a bead); "
                              "requests waiting together are computed in one forward pass")
    serving.add_argument("--batch-window", type=float, default=5.0, metavar="MS",
                         help="after a request arrives, wait up to MS ms for the connections "
                              "that sent requests before (default %(default)s)")
    serving.add_argument("--persist", action="store_true",
                         help="after the engine ends, wait for the next one (retrying with up to "
                              "2 s between tries, 8 s after the same failure again) with the "
                              "model still loaded; stop with SIGTERM")
    serving.add_argument("--connect-timeout", type=float, default=60.0, metavar="S",
                         help="keep trying to connect for S seconds (default %(default)s; "
                              "no limit with --persist)")
    serving.add_argument("--stop-grace", type=float, default=30.0, metavar="S",
                         help="after SIGTERM/SIGINT, give the request in flight S seconds to "
                              "be answered, then exit (status 3) without answering; a second "
                              "signal exits at once (default %(default)s; inf: no limit)")
    serving.add_argument("--max-atoms", type=int, default=DEFAULT_MAX_ATOMS,
                         help="refuse requests announcing more atoms (default %(default)s)")
    report = parser.add_argument_group("reporting")
    report.add_argument("--log-every", type=int, default=100, metavar="STEPS",
                        help="a status line every STEPS forward passes (default %(default)s; 0: none)")
    report.add_argument("--log-json", metavar="FILE",
                        help="also write status lines, events and the summary as JSON lines")
    report.add_argument("--extras", action="store_true",
                        help="send a JSON object with every result (model, step, model_ms, "
                             "structures_in_step) that i-PI records")


PY_DRIVER_PORT = 12345  # i-pi-py_driver's default port for -a HOST without -p


def _add_py_driver_arguments(parser: argparse.ArgumentParser) -> None:
    """i-pi-py_driver's short options, with its meanings (-m is --model above)."""
    group = parser.add_argument_group(
        "i-pi-py_driver's short options (instead of the address flags above)")
    group.add_argument("-u", dest="ipi_unix", action="store_true",
                       help="-a names a unix socket (path -S PREFIX + ADDRESS)")
    group.add_argument("-a", dest="ipi_address", metavar="ADDRESS",
                       help="the TCP host, or with -u the unix socket name (default localhost)")
    group.add_argument("-p", dest="ipi_port", type=int, metavar="PORT",
                       help=f"TCP port (default {PY_DRIVER_PORT} when -a HOST is given)")
    group.add_argument("-S", dest="ipi_prefix", metavar="PREFIX",
                       help="unix socket prefix, as --prefix")


def _add_transport_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("transport (default: the socket protocol at the address)")
    exclusive = group.add_mutually_exclusive_group()
    exclusive.add_argument("--shm", action="store_true",
                           help="i-PI's <ffsocket mode='shm'>: control messages over the unix "
                                "socket --unix, arrays in i-PI's shared memory (same node)")
    exclusive.add_argument("--mpi", action="store_true",
                           help="i-PI's <ffmpi>: be the driver ranks of `mpiexec -n 1 i-pi "
                                "input.xml : -n K umadrive serve --mpi ...` (no address; needs "
                                "mpi4py)")
    group.add_argument("--mpi-name", default="", metavar="NAME",
                       help="with --mpi: the <ffmpi name='NAME'> to serve when the input has "
                            "several (default: the only one)")


def serve_options(args: argparse.Namespace) -> ServeOptions:
    """The flags as :class:`ServeOptions` (raises ServeOptionsError)."""
    return ServeOptions(
        transport="mpi" if args.mpi else "shm" if args.shm else "socket",
        mpi_name=args.mpi_name, connections=args.connections, batch_window_ms=args.batch_window,
        persist=args.persist, connect_timeout_s=args.connect_timeout, max_atoms=args.max_atoms,
        warmup=args.warmup, log_every=args.log_every, log_json=args.log_json,
        extras=args.extras, pbc=args.pbc, stop_grace_s=args.stop_grace)


_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def memory_size(text: str) -> int:
    """``--memory-budget 8GiB`` -> bytes (units B, kB/MB/GB/TB, KiB/MiB/GiB/TiB; none: bytes)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", text)
    unit = match and match.group(2).upper()
    if not match or unit not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a size such as 8GiB, 512MiB or "
                                         "2e9 (bytes)")
    size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size < 2**20:
        raise argparse.ArgumentTypeError(f"{text!r} is {size} bytes; a memory budget below 1 MiB "
                                         "cannot hold one chunk of edges: give at least 1MiB")
    return size


def _pbc_flags(text: str) -> tuple[bool, bool, bool]:
    """``--pbc TTF`` -> (True, True, False)."""
    flags = text.upper()
    if len(flags) != 3 or set(flags) - {"T", "F"}:
        raise argparse.ArgumentTypeError(f"{text!r}: expected three letters T or F, one per "
                                         "lattice direction, e.g. TTT or TTF")
    return tuple(flag == "T" for flag in flags)


def parse_address(args: argparse.Namespace) -> Address | None:
    """The address flags (umadrive's or i-pi-py_driver's), or None when none is given."""
    unix, host, port, prefix = args.unix, args.host, args.port, args.prefix
    if args.ipi_prefix is not None:
        prefix = args.ipi_prefix
    if args.ipi_port is not None:
        if port is not None:
            raise ValueError(f"-p {args.ipi_port} and --port {port} both give the port; use one")
        port = args.ipi_port
    if args.ipi_unix or args.ipi_address is not None:
        if unix is not None or host is not None:
            raise ValueError("-u/-a (i-pi-py_driver's style) and --unix/--host both give the "
                             "address; use one style")
        address = "localhost" if args.ipi_address is None else args.ipi_address
        if args.ipi_unix:
            if port is not None:
                raise ValueError(f"-u makes -a {address!r} a unix socket name, but a TCP port "
                                 f"({port}) is given too: drop -u for TCP, or drop the port")
            unix = address
        else:
            host, port = address, PY_DRIVER_PORT if port is None else port
    if unix is None and port is None and host is None:
        return None
    if host is not None and port is None and unix is None:
        raise ValueError(f"--host {host!r} needs --port P")
    return resolve_address(unix=unix, prefix=prefix, host=host, port=port)


def _model_kwargs(text: str) -> dict:
    try:
        model_kwargs = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--model-kwargs {text!r} is not JSON ({error}); expected an object "
                         "like '{\"a\": 1}'") from None
    if not isinstance(model_kwargs, dict):
        raise ValueError(f"--model-kwargs {text!r} must be a JSON object")
    return model_kwargs


def read_template(path: str):
    """``--structure``: the template, read with ase.io.read; errors name the flag."""
    import ase.io

    try:
        return ase.io.read(path)
    except FileNotFoundError:
        raise ValueError(f"--structure {path!r}: no such file; give a structure file "
                         "(extxyz, cif, POSCAR, ... anything ase.io.read reads)") from None
    except (OSError, ValueError, StopIteration) as error:
        raise ValueError(f"--structure {path!r}: ase.io.read could not read it ({error}); give "
                         "a structure file in a format ase.io.read knows") from None


def run(args: argparse.Namespace) -> int:
    rank = process_rank()
    where = f"[rank {rank.rank}]" if rank is not None else ""
    logging.basicConfig(format=f"umadrive serve{where}: %(levelname)s: %(message)s",
                        level=logging.INFO)
    try:  # everything the command line alone can tell, before anything heavy loads
        options = serve_options(args)
        address = parse_address(args)
        options.check_address(address)
        model_kwargs = _model_kwargs(args.model_kwargs)
    except ValueError as error:  # ServeOptionsError included
        log.error("%s", error)
        return 2
    # Loading starts here, once the flags are known to be good.
    from umadrive.commands.compile import keep_inductor_kernels

    keep_inductor_kernels()
    keep_freed_memory()
    from umadrive.driver.backends import UmaOptions, make_backend
    from umadrive.driver.lifecycle import StopSignal
    from umadrive.driver.serving import open_serve_log, serve

    device = choose_device(args.device, rank)
    if rank is not None:
        log.info("took device %s (rank %d of %d, local rank %d)", device, rank.rank, rank.size,
                 rank.local)
    try:
        template = read_template(args.structure)
        start = time.perf_counter()
        backend = make_backend(args.model, template, **model_kwargs, uma=UmaOptions(
            task=args.task, charge=args.charge, spin=args.spin, mode=args.mode, device=device,
            memory_budget=args.memory_budget))
    except (ValueError, OSError) as error:
        log.error("%s", error)
        return 2
    with open_serve_log(options, backend) as serve_log:
        serve_log.event("loaded", f"model {backend.name} ready; template {args.structure}: "
                        f"{len(template)} atoms, {template.get_chemical_formula()}",
                        model=backend.name, seconds=time.perf_counter() - start,
                        atoms=len(template))
        with StopSignal(grace_s=options.stop_grace_s) as stop:
            status = serve(backend, template, address, options, stop=stop, serve_log=serve_log)
    log.info("exiting with status %d", status)
    _leave_now_if_compiling(backend, status)
    return status


def _leave_now_if_compiling(backend, status: int) -> None:
    """A compile still running in its thread cannot be stopped, and the C++ under
    it aborts the interpreter's normal exit: end its helper process, if any, and
    this process at once (nothing is cached; ``umadrive compile`` caches the
    compiled model ahead of a short run)."""
    if not getattr(backend, "compiling", False):
        return
    log.info("the background compile had not finished: left unfinished (not cached)")
    stop_compiling = getattr(backend, "stop_compiling", None)
    if stop_compiling is not None:
        stop_compiling()
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        mpi.Finalize()  # what mpi4py does at a normal exit, which os._exit skips
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
