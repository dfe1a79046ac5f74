"""The compiled message passing and its warm-up (``InferenceSettings.compile``).

:class:`CompiledMessagePassing` is ``backbone.message_passing`` compiled with
``dynamic=True`` two ways:

* *precompiled* (:meth:`CompiledMessagePassing.precompile`): traced and compiled
  ahead of time for one batch's inputs with torch's precompile
  (``torch.compile(..., fullgraph=True).aot_compile``), forward and backward
  (the forces are the energy's gradient through it). The result is one
  function with its guards; it serialises to bytes (kernel cache entries) and
  loads from them without tracing again (:meth:`CompiledMessagePassing.load`).
  The model is an argument of that function, not a part of it: every call reads
  the module's current parameters and buffers, so merged experts re-merged for
  another composition are used as they are.
* *just in time*: ``torch.compile`` traces at the first call whose inputs no
  compiled code fits (routed experts, or no warm-up with a cache).

Atom and edge counts are symbolic; the number of systems, which is 1 at a
warm-up on one structure, is marked *unbacked* so that torch does not
specialise the code to a batch of one: after one compile, batches of any
number of systems, atom counts and edge counts run without a recompile (with
merged experts; routed experts split the edges per system and compile per
number of systems).

:class:`WarmUp` compiles once, in the calling thread or a background one. With
a :class:`~umadrive.model.compile_cache.KernelCache` it loads the precompiled
function stored there, or precompiles and stores it; without one it runs a
batch through the just-in-time path. A loaded function whose guards accept the
warm-up batch is not run there: its first call is the first real one (a
template call would only compete for the CPU with the uncompiled answers), and
:class:`~umadrive.model.predictor.PredictUnit` answers that call uncompiled if
it fails. Progress goes to a callback.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from umadrive.model.compile_cache import KernelCache, KernelKey

if TYPE_CHECKING:
    from torch._dynamo.aot_compile import AOTCompiledFunction

log = logging.getLogger(__name__)

Progress = Callable[[str, bool, "WarmUp"], None]
"""``progress(text, final, warm_up)``: a status line of ``warm_up``; ``final`` on the
last one (the warm-up has ended: its ``seconds``, ``error``, ``cache_hit`` are set)."""

#: Seconds between progress lines while compiling.
PROGRESS_INTERVAL_S = 1.0

MessagePassingInputs = tuple
"""The positional arguments of ``message_passing``: (numbers, batch, edge_index,
edge_vectors, system, routing, wigner, targets)."""


class CompiledMessagePassing:
    """``message_passing`` (a bound method of the backbone module) compiled with
    ``backend``; same signature. Calls run the precompiled function when one is
    installed and its guards accept the inputs, else the just-in-time one."""

    def __init__(self, message_passing: Callable[..., torch.Tensor],
                 backend: str | Callable) -> None:
        self.backend = backend
        self._message_passing = message_passing
        self._module = message_passing.__self__
        self._compiled = torch.compile(message_passing, dynamic=True, backend=backend)
        self._precompiled: AOTCompiledFunction | None = None
        self._misfit_logged = False  # a call the precompiled guards refused was logged

    def __call__(self, numbers: torch.Tensor, batch: torch.Tensor, edge_index: torch.Tensor,
                 edge_vectors: torch.Tensor, system: torch.Tensor, routing,
                 wigner: torch.Tensor | None,
                 targets: torch.Tensor | None = None) -> torch.Tensor:
        inputs = (numbers, batch, edge_index, edge_vectors, system, routing, wigner, targets)
        precompiled = self._precompiled
        if precompiled is not None:
            if precompiled.guard_check(self._module, *inputs):
                return precompiled(self._module, *inputs)
            if not self._misfit_logged:
                self._misfit_logged = True
                log.info("the precompiled model does not fit this call (%s): compiling it "
                         "just in time", _guard_failure(precompiled, self._module, inputs))
        _mark_unbacked(inputs)
        with _constant_floats():
            return self._compiled(*inputs)

    def fits(self, inputs: MessagePassingInputs) -> bool:
        """Whether the installed precompiled function's guards accept ``inputs``."""
        return self._precompiled is not None and self._precompiled.guard_check(self._module,
                                                                               *inputs)

    def precompile(self, inputs: MessagePassingInputs) -> None:
        """Traces and compiles forward and backward for inputs like ``inputs`` (one
        batch's; ``edge_vectors`` requiring grad) and installs the result."""
        _mark_unbacked(inputs)
        compiler = torch.compile(self._message_passing, fullgraph=True, dynamic=True,
                                 backend=self.backend)
        with _constant_floats(), _quiet_guard_building():
            precompiled = compiler.aot_compile((inputs, {}))
        precompiled.disable_guard_check()  # checked in __call__, to fall back
        self._precompiled = precompiled

    def serialize(self) -> bytes:
        """The installed precompiled function as bytes (:meth:`load` takes them)."""
        if self._precompiled is None:
            raise RuntimeError("nothing precompiled to serialize")
        return type(self._precompiled).serialize(self._precompiled).serialized_data

    def load(self, payload: bytes) -> None:
        """Installs the precompiled function ``payload`` (from :meth:`serialize`);
        torch's errors propagate (e.g. a payload of another torch)."""
        with _quiet_guard_building():
            precompiled = torch.compiler.load_compiled_function(io.BytesIO(payload))
        precompiled.disable_guard_check()
        self._precompiled = precompiled


def _constant_floats() -> contextlib.AbstractContextManager:
    """Traces the modules' float attributes (eps, cutoff) as constants. With
    dynamic=True dynamo first makes them symbolic, then gives up on them and
    traces the whole frame again (twice the tracing time; precompile cannot
    trace again at all). The kernel key covers the model they come from."""
    return torch._dynamo.config.patch(specialize_float=True)


@contextlib.contextmanager
def _quiet_guard_building() -> Iterator[None]:
    """Silences the one warning torch's guard building gives for every compile of
    the message passing: it reads ``.grad`` of the non-leaf edge vectors to guard
    on it (torch's own doing; nothing the user can act on)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning,
                                message="The .grad attribute of a Tensor that is not a leaf")
        yield


def _guard_failure(precompiled: AOTCompiledFunction, module: torch.nn.Module,
                   inputs: MessagePassingInputs) -> str:
    """Why ``precompiled``'s guards refuse ``inputs`` (torch's words)."""
    f_locals = precompiled.prepare_f_locals(module, *inputs)
    failed = precompiled._artifacts.guard_manager.check_verbose(f_locals)
    return "; ".join(part.strip() for part in failed.verbose_code_parts)


def _mark_unbacked(inputs: MessagePassingInputs) -> None:
    # system: (B, C), targets: (B, 3). Unbacked: no guard on B (B = 1 would
    # otherwise be specialised).
    torch._dynamo.decorators.mark_unbacked(inputs[4], 0)
    if inputs[7] is not None:
        torch._dynamo.decorators.mark_unbacked(inputs[7], 0)


class _Captured(Exception):
    """Stops a prediction once the message passing's inputs are recorded."""


class WarmUp:
    """One compile of a predict unit's message passing.

    run: ``run(message_passing)`` makes one prediction of the warm-up batch with
    ``message_passing`` standing in for the backbone's (:class:`RunOptions
    <umadrive.model.uma.RunOptions>`). compiled: the unit's compiled message
    passing. cache: where the precompiled function is looked up first and stored
    after (None: no precompile; the batch compiles just in time, with torch's own
    caches only). key: makes the cache entry's key (required with a cache;
    called in the warm-up's thread, since hashing a large model's weights takes a
    while). progress: gets a line every :data:`PROGRESS_INTERVAL_S` seconds and a
    final one (see :data:`Progress`). fill_cache: on a cache miss, called in the
    warm-up's thread to fill the entry from another process (which then competes
    with this one for the CPU but not for its interpreter lock), before the entry
    is looked up again; on a second miss the warm-up precompiles here.
    yield_to: called before each step of the warm-up (hashing the model, loading,
    filling the cache, compiling, running); blocks while answers must come first
    (a predict unit's first answer: see :meth:`PredictUnit.warm_up
    <umadrive.model.predictor.PredictUnit.warm_up>`).

    An entry that torch cannot load is logged (one line) and replaced by a new
    precompile; a precompile that fails is logged and the warm-up compiles just
    in time instead, storing nothing.
    """

    def __init__(self, run: Callable[[Callable[..., torch.Tensor]], object], *,
                 compiled: CompiledMessagePassing, what: str,
                 cache: KernelCache | None = None,
                 key: Callable[[], KernelKey] | None = None,
                 progress: Progress | None = None,
                 fill_cache: Callable[[], None] | None = None,
                 yield_to: Callable[[], None] | None = None) -> None:
        if cache is not None and key is None:
            raise ValueError("WarmUp: a cache needs the key of its entry")
        if fill_cache is not None and cache is None:
            raise ValueError("WarmUp: fill_cache needs a cache")
        self._run = run
        self._compiled = compiled
        self.what = what
        self.cache = cache
        self._key = key
        self._progress = progress
        self._fill_cache = fill_cache
        self._yield_to = yield_to or (lambda: None)
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        #: seconds the warm-up took (None while it runs)
        self.seconds: float | None = None
        #: the exception the compile raised, if it failed
        self.error: BaseException | None = None
        #: whether the precompiled function was loaded from the cache (no tracing)
        self.cache_hit = False
        #: whether a precompiled function was stored in the cache
        self.stored = False
        #: whether the compiled code ran on the warm-up batch (not on a cache hit
        #: whose guards accept it: the first real call is its first)
        self.ran_compiled = False
        #: the cache entry (None without a cache, or before its key is known)
        self.cache_path: Path | None = None
        self._note = ""  # what the progress line adds to "compiling ...: T s"

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
        where = (f"loaded from the cache {self.cache_path}" if self.cache_hit
                 else f"cached for next time in {self.cache_path}" if self.stored
                 else "not cached")
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
        yield_to = self._yield_to
        if self.cache is not None:
            yield_to()
            key = self._key()
            self.cache_path = self.cache.path(key)
            self._note = "; loading it from the cache"
            yield_to()
            self.cache_hit = self._load(key)
            if not self.cache_hit and self._fill_cache is not None:
                self._note = "; in a helper process, cached for next time"
                yield_to()
                self._fill_cache()
                self._note = "; loading it from the cache"
                self.cache_hit = self._load(key)
            yield_to()
            if self.cache_hit and self._compiled.fits(self._capture_inputs()):
                # Nothing to compile: the first real call runs the loaded code (a
                # template call here would only compete with the uncompiled answers).
                return
            self._note = "" if self.cache_hit else "; cached for next time"
            if not self.cache_hit and self._precompile():
                self.stored = self._store(key)
        yield_to()
        self.ran_compiled = True
        self._run(self._compiled)

    def _load(self, key: KernelKey) -> bool:
        """Installs the cache's precompiled function; whether there was a usable one."""
        payload = self.cache.load(key)
        if payload is None:
            return False
        try:
            self._compiled.load(payload)
        except Exception as error:  # torch's own checks (versions, devices, pickles)
            log.warning("the compiled model in %s could not be loaded (%s: %s): compiling "
                        "it again", self.cache_path, type(error).__name__, error)
            return False
        return True

    def _store(self, key: KernelKey) -> bool:
        """Stores the precompiled function; whether it worked (else it is logged and
        this process uses it all the same)."""
        try:
            self.cache.store(key, self._compiled.serialize())
        except Exception as error:  # a read-only or full cache folder, torch's pickling
            log.warning("the compiled model could not be stored in %s (%s: %s): the next "
                        "start compiles it again", self.cache_path, type(error).__name__, error)
            return False
        return True

    def _capture_inputs(self) -> MessagePassingInputs:
        """The message passing's inputs for the warm-up batch (the prediction stops there)."""
        captured: list[MessagePassingInputs] = []

        def capture(*inputs: object) -> torch.Tensor:
            captured.append(inputs)
            raise _Captured

        try:
            self._run(capture)
        except _Captured:
            pass
        return captured[0]

    def _precompile(self) -> bool:
        """Precompiles on the warm-up batch's inputs; whether it worked."""
        inputs = self._capture_inputs()
        try:
            self._compiled.precompile(inputs)
        except Exception as error:  # e.g. a graph break: torch.compile still copes
            log.warning("precompiling %s failed (%s: %s): compiling it on its first call "
                        "instead, not cached", self.what, type(error).__name__, error)
            return False
        return True

    def _tick(self, started: float, stop: threading.Event) -> None:
        while not stop.wait(PROGRESS_INTERVAL_S):
            elapsed = time.perf_counter() - started
            self._progress(f"compiling {self.what}: {elapsed:.0f} s{self._note}", False, self)
