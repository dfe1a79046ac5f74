"""The driver as a library: :func:`serve` answers an MD engine's force requests
with a loaded backend until the engine ends (or, with ``persist``, until a stop).

Embedding it, e.g. in a notebook thread::

    backend = make_backend("uma-s-1p1", template, uma=UmaOptions(task="omat"))
    stop = StopFlag()
    thread = threading.Thread(target=serve, args=(backend, template, address),
                              kwargs={"stop": stop})
    thread.start()   # ... run i-PI or ASE against address ...
    stop.set(); thread.join(); stop.close()
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from umadrive.driver.lifecycle import StopFlag
from umadrive.driver.options import ServeOptions
from umadrive.driver.stats import ServeLog
from umadrive.driver.transports import open_pool
from umadrive.protocol.errors import ProtocolError
from umadrive.structure import Structure

if TYPE_CHECKING:
    import ase

    from umadrive.driver.backends.protocol import Backend
    from umadrive.protocol.addresses import Address

log = logging.getLogger("umadrive.driver")

_FIRST_RETRY_AFTER_FAILURE_S = 0.5
_MAX_RETRY_AFTER_REPEATED_FAILURE_S = 8.0
_OUTCOMES = {
    "EXIT": "the server sent EXIT",
    "EOF": "the server closed the connection",
    "failed": "gave up on the server (errors above)",
    "stopped": "stopped by {}",
}


@contextlib.contextmanager
def open_serve_log(options: ServeOptions, backend: Backend) -> Iterator[ServeLog]:
    """The status lines and JSON log ``options`` ask for (``log_json`` is
    appended to and closed at the end)."""
    with contextlib.ExitStack() as stack:
        json_file = stack.enter_context(open(options.log_json, "a")) if options.log_json else None
        yield ServeLog(every=options.log_every, json_file=json_file,
                       device_memory=backend.device_memory_bytes)


def serve(backend: Backend, template: ase.Atoms, address: Address | None,
          options: ServeOptions = ServeOptions(), *, stop: StopFlag | None = None,
          serve_log: ServeLog | None = None) -> int:
    """Serves the engine at ``address`` (None with ``transport="mpi"``) with
    ``backend``; every request is checked against ``template`` (species, atom
    order and periodicity). Returns when the engine ended the run (or, with
    ``options.persist``, when ``stop`` is set); the request in flight is
    answered first.

    stop: set it from another thread to end the service (None: run until the
        engine ends). serve_log: where status lines go (None: per ``options``).
    Returns 0 after EXIT, an end of stream between steps or a stop, 1 when a
    request was refused, the peer broke the protocol or died, or the model
    failed. Raises :class:`~umadrive.driver.options.ServeOptionsError` when
    ``address`` does not fit the transport.
    """
    options.check_address(address)
    with contextlib.ExitStack() as stack:
        if stop is None:
            stop = stack.enter_context(StopFlag())
        if serve_log is None:
            serve_log = stack.enter_context(open_serve_log(options, backend))
        stack.enter_context(_compiling_in_background(backend, serve_log))
        if options.warmup:
            _warm_up(backend, template, serve_log)
        status = _serve_runs(backend, template, address, options, stop, serve_log)
        serve_log.summary()
    return status


@contextlib.contextmanager
def _compiling_in_background(backend: Backend, serve_log: ServeLog) -> Iterator[None]:
    """For a backend that compiles (``compiles`` and ``warm_up``, e.g. UMA in
    turbo): compiles in a background thread, with kernels from and into the
    cache under ``$UMADRIVE_CACHE/compiled``; requests are answered uncompiled
    meanwhile, then compiled (the backend logs the switch). The engine never
    waits for the compiler. The end of the compile is reported while serving
    only (a compile still running when the service ends goes on in its thread;
    ``umadrive serve`` then ends its process at once)."""
    if not getattr(backend, "compiles", False):
        yield
        return
    serving = [True]
    lock = threading.Lock()  # no report after the service (and its JSON log) ended

    def report(text: str, final: bool, warm_up) -> None:  # warm_up: model.compiling.WarmUp
        with lock:
            if final and serving[0]:
                serve_log.event("compiled", text, seconds=warm_up.seconds,
                                cache_hit=warm_up.cache_hit, failed=warm_up.error is not None)

    started = backend.warm_up(background=True, progress=report)
    if not started.done:  # else an earlier serve() of this backend compiled it
        serve_log.event("compiling", f"compiling {started.what} in the background (answering "
                        f"uncompiled until it is done; kernels cached in {started.cache.folder})")
    try:
        yield
    finally:
        with lock:
            serving[0] = False


def _warm_up(backend: Backend, template: ase.Atoms, serve_log: ServeLog) -> None:
    start = time.perf_counter()
    backend.compute([Structure.from_atoms(template)])
    seconds = time.perf_counter() - start
    serve_log.event("warmup", f"warm-up prediction on the template ({len(template)} atoms): "
                    f"{seconds:.2f} s", seconds=seconds)


def _serve_runs(backend: Backend, template: ase.Atoms, address: Address | None,
                options: ServeOptions, stop: StopFlag, serve_log: ServeLog) -> int:
    """Serves one engine run, or one after another with ``persist``. A run that
    fails the same way as the one before (say a server that keeps sending a
    system of another atom count) is retried with growing pauses, up to
    :data:`_MAX_RETRY_AFTER_REPEATED_FAILURE_S`, and logged once, not per retry."""
    from umadrive.driver.batching import serve_requests

    retry_s = _FIRST_RETRY_AFTER_FAILURE_S
    previous_failures: frozenset[str] = frozenset()
    while True:
        try:
            pool = open_pool(options, address, stop, serve_log, expected_atoms=len(template),
                             quiet=previous_failures)
        except (ProtocolError, OSError, ImportError) as error:  # ImportError: mpi, no mpi4py
            log.error("%s", error)
            return 1
        if pool is None:
            return 0  # stopped while waiting for a server
        requests_before = serve_log.total.requests
        try:
            serve_requests(pool, backend, template, serve_log=serve_log, stop=stop,
                           extras=options.extras, pbc=options.pbc)
        finally:
            pool.close()
        outcome = "stopped" if stop.requested else pool.outcome
        failures = frozenset(pool.failures)
        repeated = outcome == "failed" and bool(failures) and failures <= previous_failures
        requests = serve_log.total.requests - requests_before
        serve_log.event("run_end", f"{_OUTCOMES[outcome].format(stop.requested)} after "
                        f"{requests} requests", quiet=repeated, outcome=outcome,
                        requests=requests)
        if stop.requested:
            return 0
        if not options.persist:
            return 0 if outcome in ("EXIT", "EOF") else 1
        if outcome == "failed":  # the same server may fail the same way again: do not hammer it
            if repeated:
                if retry_s == _FIRST_RETRY_AFTER_FAILURE_S:
                    log.info("the same failure again: retrying with pauses growing to %g s, "
                             "without logging it again (stop with SIGTERM)",
                             _MAX_RETRY_AFTER_REPEATED_FAILURE_S)
                retry_s = min(2 * retry_s, _MAX_RETRY_AFTER_REPEATED_FAILURE_S)
            else:
                retry_s = _FIRST_RETRY_AFTER_FAILURE_S
                log.info("waiting %.1f s before connecting again", retry_s)
            previous_failures = failures
        else:
            # a finished server may still accept for a moment: give it time to go
            retry_s = _FIRST_RETRY_AFTER_FAILURE_S
            previous_failures = frozenset()
        if stop.wait(retry_s):
            return 0
