"""The compiled message passing and its warm-up (``InferenceSettings.compile``).

:class:`CompiledMessagePassing` is ``backbone.message_passing`` under
``torch.compile(dynamic=True)``. Atom and edge counts are symbolic from the
first compile; the number of systems, which is 1 at a warm-up on one
structure, is marked *unbacked* at every call so that torch does not
specialise the graph to a batch of one: after one compile, batches of any
number of systems, atom counts and edge counts run without a recompile (with
merged experts; routed experts split the edges per system and compile per
number of systems).

:class:`WarmUp` compiles by running a batch through the compiled path, in the
calling thread or a background one, with kernels loaded from and stored to a
:class:`~umadrive.model.compile_cache.KernelCache`, reporting progress through
a callback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from umadrive.model.compile_cache import KernelCache, KernelKey

log = logging.getLogger(__name__)

Progress = Callable[[str, bool, "WarmUp"], None]
"""``progress(text, final, warm_up)``: a status line of ``warm_up``; ``final`` on the
last one (the warm-up has ended: its ``seconds``, ``error``, ``cache_hit`` are set)."""

#: Seconds between progress lines while compiling.
PROGRESS_INTERVAL_S = 1.0


class CompiledMessagePassing:
    """``message_passing`` compiled with ``backend``; same signature."""

    def __init__(self, message_passing: Callable[..., torch.Tensor],
                 backend: str | Callable) -> None:
        self.backend = backend
        self._compiled = torch.compile(message_passing, dynamic=True, backend=backend)

    def __call__(self, numbers: torch.Tensor, batch: torch.Tensor, edge_index: torch.Tensor,
                 edge_vectors: torch.Tensor, system: torch.Tensor, routing,
                 wigner: torch.Tensor | None,
                 targets: torch.Tensor | None = None) -> torch.Tensor:
        # system: (B, C), targets: (B, 3). Unbacked: no guard on B (B = 1 would
        # otherwise be specialised).
        torch._dynamo.decorators.mark_unbacked(system, 0)
        if targets is not None:
            torch._dynamo.decorators.mark_unbacked(targets, 0)
        return self._compiled(numbers, batch, edge_index, edge_vectors, system, routing, wigner,
                              targets)


class WarmUp:
    """One compile of a predict unit's message passing, by running ``run()``
    (a prediction through the compiled path) once.

    cache: where compiled kernels are looked up first and stored after (None:
    torch's own caches only). key: makes the cache entry's key (required with a
    cache; called in the warm-up's thread, since hashing a large model's weights
    takes a while).
    progress: gets a line every :data:`PROGRESS_INTERVAL_S` seconds and a final one
    (see :data:`Progress`).
    """

    def __init__(self, run: Callable[[], object], *, what: str,
                 cache: KernelCache | None = None,
                 key: Callable[[], KernelKey] | None = None,
                 progress: Progress | None = None) -> None:
        if cache is not None and key is None:
            raise ValueError("WarmUp: a cache needs the key of its entry")
        self._run = run
        self.what = what
        self.cache = cache
        self._key = key
        self._progress = progress
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        #: seconds the warm-up took (None while it runs)
        self.seconds: float | None = None
        #: the exception the compile raised, if it failed
        self.error: BaseException | None = None
        #: whether an entry was found in the cache (and given to torch)
        self.cache_hit = False
        #: whether kernels were stored in the cache (no entry, or torch compiled
        #: something the entry lacked)
        self.stored = False
        #: the cache entry (None without a cache, or before its key is known)
        self.cache_path: Path | None = None

    def start(self, *, background: bool) -> "WarmUp":
        """Runs the warm-up now, or in a daemon thread with ``background``."""
        if background:
            self._thread = threading.Thread(target=self._work, name="umadrive-compile",
                                            daemon=True)
            self._thread.start()
        else:
            self._work()
        return self

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def succeeded(self) -> bool:
        return self._done.is_set() and self.error is None

    def wait(self, timeout: float | None = None) -> bool:
        """Waits for the end of the warm-up; whether it ended."""
        return self._done.wait(timeout)

    def summary(self) -> str:
        """One line on how the warm-up ended (or that it still runs)."""
        if not self.done:
            return f"compiling {self.what}"
        if self.error is not None:
            return f"compiling {self.what} failed after {self.seconds:.1f} s: {self.error}"
        if self.cache_hit and self.stored:
            where = (f"kernels partly from the cache, the rest cached for next time in "
                     f"{self.cache_path}")
        elif self.cache_hit:
            where = f"kernels from the cache {self.cache_path}"
        elif self.stored:
            where = f"cached for next time in {self.cache_path}"
        else:
            where = "not cached"
        return f"compiled {self.what} in {self.seconds:.1f} s, {where}"

    def _work(self) -> None:
        started = time.perf_counter()
        stop_ticking = threading.Event()
        ticker = None
        if self._progress is not None:
            ticker = threading.Thread(target=self._tick, args=(started, stop_ticking),
                                      daemon=True, name="umadrive-compile-progress")
            ticker.start()
        try:
            self._compile()
        except Exception as error:  # reported by the caller; the unit stays uncompiled
            self.error = error
        finally:
            self.seconds = time.perf_counter() - started
            stop_ticking.set()
            if ticker is not None:
                ticker.join()
            self._done.set()
            if self._progress is not None:
                self._progress(self.summary(), True, self)

    def _compile(self) -> None:
        if self.cache is not None:
            key = self._key()
            self.cache_path = self.cache.path(key)
            payload = self.cache.load(key)
            if payload is not None:
                torch.compiler.load_cache_artifacts(payload)
                self.cache_hit = True
        misses_before = _cache_misses()
        self._run()
        if self.cache is not None and (not self.cache_hit or _cache_misses() > misses_before):
            artifacts = torch.compiler.save_cache_artifacts()
            if artifacts is not None:
                self.cache.store(key, artifacts[0])
                self.stored = True

    def _tick(self, started: float, stop: threading.Event) -> None:
        while not stop.wait(PROGRESS_INTERVAL_S):
            elapsed = time.perf_counter() - started
            note = ("" if self.cache is None
                    else "; kernels are cached for next time" if not self.cache_hit
                    else "; kernels from the cache")
            self._progress(f"compiling {self.what}: {elapsed:.0f} s{note}", False, self)


def _cache_misses() -> int:
    """Inductor and AOTAutograd cache misses so far in this process (torch's counters)."""
    counters = torch._dynamo.utils.counters
    return (counters["inductor"]["fxgraph_cache_miss"]
            + counters["aot_autograd"]["autograd_cache_miss"])
