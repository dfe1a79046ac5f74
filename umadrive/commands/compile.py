"""``umadrive compile``: compile a UMA model for a structure ahead of a job and
store the precompiled model in the cache under ``$UMADRIVE_CACHE/compiled``
(what a cluster user runs once, e.g. on the login node, with the same model,
settings, device type, torch and, on a CPU, thread count as the job). A later
``umadrive serve`` with these loads it and reaches compiled speed within
seconds.

The compiled code serves batches of any number of structures; ``--batch B``
checks it: a batch of B copies of the structure must run without torch
compiling anything more (its frame counter unchanged).

Exit status: 0 when compiled (and cached); 1 when compiling or the check
failed; 2 for bad command-line values or a mode that does not compile.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

log = logging.getLogger("umadrive.compile")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="PATH|NAME",
                        help="a UMA checkpoint (path or name)")
    parser.add_argument("--structure", required=True, metavar="FILE",
                        help="the job's template, read with ase.io.read")
    parser.add_argument("--batch", type=int, default=1, metavar="B",
                        help="check that batches of B structures (connections x batch of "
                             "the job) need no recompile (default %(default)s)")
    parser.add_argument("--task", help="UMA dataset (required when the model has several)")
    parser.add_argument("--charge", type=int, default=0, help="total charge (default 0)")
    parser.add_argument("--spin", type=int, default=None, help="spin multiplicity")
    parser.add_argument("--mode", default="turbo", metavar="turbo|FILE.json",
                        help="inference settings with compile on (default %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")


def keep_inductor_kernels() -> None:
    """At a command's start (never in library code): unless ``TORCHINDUCTOR_CACHE_DIR``
    is set, point it at ``$UMADRIVE_CACHE/inductor`` for this process. On a CPU,
    torch's kernel cache holds the generated C++ only as source: inductor's own
    folder (default under ``/tmp``, per node, cleaned up) keeps the compiled
    libraries, and without them every start runs the C++ compiler again."""
    from umadrive.model.names import umadrive_cache

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(umadrive_cache() / "inductor"))


def progress_line(stream: TextIO) -> Callable[..., None]:
    """A ``progress(text, final, *_)`` callback drawing one updating line on a terminal
    (``\\r``, no new line until the final text); elsewhere only the final text."""
    width = [0]

    def progress(text: str, final: bool, *_: object) -> None:
        if stream.isatty():
            stream.write("\r" + text.ljust(width[0]) + ("\n" if final else ""))
            width[0] = 0 if final else len(text)
        elif final:
            stream.write(text + "\n")
        stream.flush()

    return progress


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(format="umadrive compile: %(levelname)s: %(message)s",
                        level=logging.INFO)
    if args.batch < 1:
        log.error("--batch %d: expected at least 1 structure per batch", args.batch)
        return 2
    keep_inductor_kernels()
    import ase.io
    import torch

    from umadrive.driver.backends import UmaOptions
    from umadrive.driver.backends.uma import UmaBackend
    from umadrive.structure import Structure

    try:
        template = ase.io.read(args.structure)
        backend = UmaBackend.load(args.model, template, UmaOptions(
            task=args.task, charge=args.charge, spin=args.spin, mode=args.mode,
            device=args.device))
    except (ValueError, OSError) as error:
        log.error("%s", error)
        return 2
    if not backend.compiles:
        log.error("--mode %s does not compile (compile=false): nothing to do; use --mode "
                  "turbo or settings with \"compile\": true", args.mode)
        return 2
    try:
        backend.warm_up(background=False, progress=progress_line(sys.stderr))
    except Exception:  # the progress line said why
        return 1
    start = time.perf_counter()
    traced = torch._dynamo.utils.counters["frames"]["total"]
    try:
        with torch.compiler.set_stance("fail_on_recompile"):
            backend.compute([Structure.from_atoms(template)] * args.batch)
    except Exception as error:  # torch's recompile refusal (its words say why) or the model's
        log.error("a batch of %d structures failed after compiling (the stored model must "
                  "serve it without compiling again): %s", args.batch, error)
        return 1
    if torch._dynamo.utils.counters["frames"]["total"] != traced:
        log.error("a batch of %d structures needed another compile (the log above says "
                  "why): the stored model would not serve it", args.batch)
        return 1
    log.info("a batch of %d structures: %.2f s, no recompile", args.batch,
             time.perf_counter() - start)
    return 0
