"""``umadrive serve``: load the model once, connect to an MD engine and answer its
force requests until it ends (or, with ``--persist``, until a stop signal).

Exit status: 0 after EXIT, when an engine that never sent INIT (ASE, LAMMPS)
closes between steps, or after SIGTERM/SIGINT (the request in flight is answered
first); 1 when a request is refused, the peer breaks the protocol or dies, the
model fails, or its result cannot be sent (nothing is sent in these cases;
with ``--mpi`` the whole MPI job is aborted instead, since i-PI would wait
forever for the answer); 2 for bad command-line values.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import TYPE_CHECKING

from umadrive.driver.transports import (
    add_transport_arguments, choose_device, open_pool, process_rank, transport_problem,
)
from umadrive.protocol.errors import ProtocolError
from umadrive.protocol.messages import DEFAULT_MAX_ATOMS

if TYPE_CHECKING:
    import ase

    from umadrive.driver.backend import Backend
    from umadrive.driver.lifecycle import StopSignal
    from umadrive.driver.stats import ServeLog
    from umadrive.protocol.addresses import Address

log = logging.getLogger("umadrive.driver")


def configure(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    model.add_argument("--model", required=True, metavar="PATH|NAME|ase:...",
                       help="a UMA checkpoint (path or name), 'ase:emt' or "
                            "'ase:package.module:Class' (any ASE calculator)")
    model.add_argument("--structure", required=True, metavar="FILE",
                       help="template read with ase.io.read: species, atom order, periodicity")
    model.add_argument("--task", help="UMA dataset to predict for: omat, omol, oc20, odac, omc "
                                      "(required when the model has several)")
    model.add_argument("--charge", type=int, default=0, help="total charge, UMA (default 0)")
    model.add_argument("--spin", type=int, default=None,
                       help="spin multiplicity, UMA (default 1 for omol, else 0 = unset)")
    model.add_argument("--mode", default="default", metavar="default|turbo|FILE.json",
                       help="UMA inference settings: a preset or a JSON file of settings")
    model.add_argument("--device", default="cpu",
                       help="cpu, cuda or cuda:N (default cpu); under an MPI launcher, cuda "
                            "means cuda:(local rank %% visible devices)")
    model.add_argument("--warmup", action="store_true",
                       help="run one prediction on the template before connecting (compile "
                            "time is then not paid in the first MD step)")
    model.add_argument("--model-kwargs", default="{}", metavar="JSON",
                       help="keyword arguments for an ASE calculator, as a JSON object")
    where = parser.add_argument_group("address (unix socket, or --host/--port for TCP)")
    where.add_argument("--unix", metavar="NAME", help="unix socket PREFIX+NAME")
    where.add_argument("--prefix", default="/tmp/ipi_", help="unix socket prefix (default %(default)s)")
    where.add_argument("--host", help="TCP host (default localhost when --port is given)")
    where.add_argument("--port", type=int, help="TCP port")
    add_transport_arguments(parser)
    serving = parser.add_argument_group("serving")
    serving.add_argument("--connections", type=int, default=1, metavar="N",
                         help="open N connections to the server (i-PI gives each one a bead); "
                              "requests waiting together are computed in one forward pass")
    serving.add_argument("--batch-window", type=float, default=5.0, metavar="MS",
                         help="after a request arrives, wait up to MS ms for the connections "
                              "that sent requests before (default %(default)s)")
    serving.add_argument("--persist", action="store_true",
                         help="after the engine ends, wait for the next one (retrying with up to "
                              "2 s between tries) with the model still loaded; stop with SIGTERM")
    serving.add_argument("--connect-timeout", type=float, default=60.0, metavar="S",
                         help="keep trying to connect for S seconds (default %(default)s; "
                              "no limit with --persist)")
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


def _bad_arguments(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line, or None."""
    if args.connections < 1:
        return f"--connections {args.connections}: expected 1 or more"
    if args.batch_window < 0:
        return f"--batch-window {args.batch_window}: expected 0 ms or more"
    if args.log_every < 0:
        return f"--log-every {args.log_every}: expected 0 (no status lines) or more"
    problem = transport_problem(args)
    if problem:
        return problem
    try:
        model_kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as error:
        return (f"--model-kwargs {args.model_kwargs!r} is not JSON ({error}); expected an "
                "object like '{\"a\": 1}'")
    if not isinstance(model_kwargs, dict):
        return f"--model-kwargs {args.model_kwargs!r} must be a JSON object"
    return None


def run(args: argparse.Namespace) -> int:
    rank = process_rank()
    where = f"[rank {rank.rank}]" if rank is not None else ""
    logging.basicConfig(format=f"umadrive serve{where}: %(levelname)s: %(message)s",
                        level=logging.INFO)
    problem = _bad_arguments(args)
    if problem:
        log.error("%s", problem)
        return 2
    # Heavy imports happen here, not in configure(), so `umadrive --help` stays fast.
    import ase.io

    from umadrive.driver.backend import UmaOptions, make_backend
    from umadrive.driver.lifecycle import StopSignal
    from umadrive.driver.stats import ServeLog
    from umadrive.protocol.addresses import resolve_address

    device = choose_device(args.device, rank)
    if rank is not None:
        log.info("took device %s (rank %d of %d, local rank %d)", device, rank.rank, rank.size,
                 rank.local)
    try:
        address = None if args.mpi else resolve_address(unix=args.unix, prefix=args.prefix,
                                                        host=args.host, port=args.port)
        template = ase.io.read(args.structure)
        start = time.perf_counter()
        backend = make_backend(args.model, template, **json.loads(args.model_kwargs), uma=UmaOptions(
            task=args.task, charge=args.charge, spin=args.spin, mode=args.mode, device=device))
    except (ValueError, OSError) as error:
        log.error("%s", error)
        return 2
    json_file = open(args.log_json, "a") if args.log_json else None
    try:
        serve_log = ServeLog(every=args.log_every, json_file=json_file,
                             device_memory=backend.device_memory_bytes)
        serve_log.event("loaded", f"model {backend.name} ready; template {args.structure}: "
                        f"{len(template)} atoms, {template.get_chemical_formula()}",
                        model=backend.name, seconds=time.perf_counter() - start,
                        atoms=len(template))
        if args.warmup:
            _warm_up(backend, template, serve_log)
        with StopSignal() as stop:
            status = _serve_runs(args, address, backend, template, serve_log, stop)
        serve_log.summary()
        log.info("exiting with status %d", status)
        return status
    finally:
        if json_file is not None:
            json_file.close()


def _warm_up(backend: Backend, template: ase.Atoms, serve_log: ServeLog) -> None:
    from umadrive.structure import Structure

    structure = Structure(positions=template.positions.copy(), cell=template.cell.array.copy(),
                          pbc=template.pbc.copy())
    start = time.perf_counter()
    backend.compute([structure])
    seconds = time.perf_counter() - start
    serve_log.event("warmup", f"warm-up prediction on the template ({len(template)} atoms): "
                    f"{seconds:.2f} s", seconds=seconds)


_FIRST_RETRY_AFTER_FAILURE_S = 0.5
_OUTCOMES = {
    "EXIT": "the server sent EXIT",
    "EOF": "the server closed the connection",
    "failed": "gave up on the server (errors above)",
    "stopped": "stopped by {}",
}


def _serve_runs(args: argparse.Namespace, address: Address | None, backend: Backend,
                template: ase.Atoms, serve_log: ServeLog, stop: StopSignal) -> int:
    """Serves one engine run, or one after another with ``--persist``."""
    from umadrive.driver.batching import serve_requests
    from umadrive.driver.connections import MAX_RETRY_INTERVAL_S

    retry_s = _FIRST_RETRY_AFTER_FAILURE_S
    while True:
        try:
            pool = open_pool(args, address, stop, serve_log, expected_atoms=len(template))
        except (ProtocolError, OSError, ImportError) as error:  # ImportError: --mpi, no mpi4py
            log.error("%s", error)
            return 1
        if pool is None:
            return 0  # stopped while waiting for a server
        requests_before = serve_log.total.requests
        try:
            serve_requests(pool, backend, template, serve_log=serve_log, stop=stop,
                           extras=args.extras)
        finally:
            pool.close()
        outcome = "stopped" if stop.requested else pool.outcome
        requests = serve_log.total.requests - requests_before
        serve_log.event("run_end", f"{_OUTCOMES[outcome].format(stop.requested)} after "
                        f"{requests} requests", outcome=outcome, requests=requests)
        if stop.requested:
            return 0
        if not args.persist:
            return 0 if outcome in ("EXIT", "EOF") else 1
        if outcome == "failed":  # the same server may fail the same way again: do not hammer it
            log.info("waiting %.1f s before connecting again", retry_s)
            if stop.wait(retry_s):
                return 0
            retry_s = min(2 * retry_s, MAX_RETRY_INTERVAL_S)
        else:
            retry_s = _FIRST_RETRY_AFTER_FAILURE_S
