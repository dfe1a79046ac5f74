"""Per-edge small matrix products on a CPU, in C (``edge_products.c``).

* :func:`apply` ``(m (E, A, B), x (E, B, C)) -> (E, A, C)``: ``m[e] @ x[e]``;
* :func:`outer` ``(g (E, A, C), x (E, B, C)) -> (E, A, B)``: ``g[e] @ x[e]^T``.

Both for float32 and float64 CPU tensors, without autograd (see
:func:`umadrive.model.edge_ops.rotate_edges` for that). Why not ``torch.bmm``:
for UMA's edge rotations (about 10,000 edges of 9 x 9 matrices times 9 x 256
features) the matrix library makes one small call per edge and runs them at a
fraction of its large-product rate; a loop over the edges that is vectorised
over the channels runs at the speed of memory instead
(``benchmarks/edge_products.py`` measures both).

The loops run on ``torch.get_num_threads()`` OpenMP threads. The library links
``libgomp.so.1``, which in a process that has imported torch (CPU builds for
Linux) resolves to the copy torch loaded: the kernels then share torch's thread
pool instead of competing with it for the cores (a separate pool of POSIX
threads, tried first in an uncommitted trial, ran no faster on two threads
than on one).

The source is compiled on first use with the system's C compiler (``$CC``, else
``cc``) for this CPU (``-march=native``), into
``$UMADRIVE_CACHE/kernels/edge_products-<key>.so``, the key a digest of the
source, the flags, the compiler's version and the CPU's feature flags; written
to a temporary file and renamed (atomic), so processes may share the folder. When
there is no compiler, compiling fails, or ``UMADRIVE_NATIVE_KERNELS=0`` is set,
:func:`available` is False (said once in the log) and callers use ``torch.bmm``.
:func:`~umadrive.model.get_predict_unit` starts the build (:func:`prepare`) while
it loads a model for a CPU, so that a first answer does not wait for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

from umadrive.model.names import umadrive_cache

__all__ = ["apply", "available", "describe", "disabled", "outer", "prepare"]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_suffix(".c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
#: Set to 0 to use torch.bmm instead (e.g. to compare).
SWITCH = "UMADRIVE_NATIVE_KERNELS"
_SUFFIXES = {torch.float32: "f32", torch.float64: "f64"}

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_tried = False
_state = "not loaded yet"
_disabled = 0  # nesting depth of disabled()


def available() -> bool:
    """Whether the compiled kernels can be used (compiling them on the first call)."""
    return not _disabled and _load() is not None


def prepare() -> threading.Thread | None:
    """Builds (or loads) the kernels in a thread of their own, so that what the
    caller does meanwhile (loading a model) hides the compile; a first product
    that comes sooner waits for it. Returns the thread, or None when there is
    nothing left to do."""
    if _tried:
        return None
    thread = threading.Thread(target=_load, name="umadrive-edge-products")
    thread.start()
    return thread


def describe() -> str:
    """One line on the kernels (building them if not yet tried): where the library
    is, or why ``torch.bmm`` is used instead."""
    _load()
    return _state


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within the block, :func:`available` is False: ``torch.bmm`` does the
    per-edge products (to compare the two in one process; not thread-safe)."""
    global _disabled
    _disabled += 1
    try:
        yield
    finally:
        _disabled -= 1


def apply(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(E, A, C): ``m[e] @ x[e]`` for m (E, A, B), x (E, B, C); CPU, float32 or
    float64, one dtype. Call only when :func:`available`."""
    edges, rows, inner = m.shape
    out = x.new_empty((edges, rows, x.shape[2]))
    _run("apply", m, x, out, edges, rows, inner, x.shape[2])
    return out


def outer(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(E, A, B): ``g[e] @ x[e]^T`` for g (E, A, C), x (E, B, C); as :func:`apply`."""
    edges, rows, channels = g.shape
    out = g.new_empty((edges, rows, x.shape[1]))
    _run("outer", g, x, out, edges, rows, x.shape[1], channels)
    return out


def _run(kind: str, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor,
         *sizes: int) -> None:
    a, b = a.contiguous(), b.contiguous()
    function = getattr(_load(), f"umadrive_{kind}_{_SUFFIXES[a.dtype]}")
    function(a.data_ptr(), b.data_ptr(), out.data_ptr(), *sizes, torch.get_num_threads())


def _load() -> ctypes.CDLL | None:
    global _library, _state, _tried
    if _tried:
        return _library
    with _lock:
        if not _tried:
            _library, _state = _compiled_library()
            _tried = True
    return _library


def _compiled_library() -> tuple[ctypes.CDLL | None, str]:
    """The loaded library, or None; and what became of it, in words."""
    if os.environ.get(SWITCH, "1") == "0":
        state = f"off ({SWITCH}=0): torch.bmm"
        log.info("per-edge products %s", state)
        return None, state
    compiler = os.environ.get("CC") or "cc"
    if shutil.which(compiler) is None:
        state = (f"no C compiler ({compiler!r}): torch.bmm, slower on a CPU; install one "
                 "(e.g. gcc) or set CC")
        log.info("per-edge product kernels: %s", state)
        return None, state
    try:
        path = _build(compiler)
        library = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as error:
        state = f"could not be built ({error}): torch.bmm, slower on a CPU"
        log.warning("the per-edge product kernels %s", state)
        return None, state
    pointer, size = ctypes.c_void_p, ctypes.c_long
    for kind in ("apply", "outer"):
        for suffix in _SUFFIXES.values():
            function = getattr(library, f"umadrive_{kind}_{suffix}")
            function.argtypes = (pointer, pointer, pointer, size, size, size, size,
                                 ctypes.c_int)
            function.restype = None
    return library, f"built with {compiler}: {path}"


def _build(compiler: str) -> Path:
    """The shared library for this source, compiler and CPU: from the cache, or
    compiled into it."""
    source = SOURCE.read_bytes()
    version = subprocess.run([compiler, "--version"], capture_output=True, timeout=60,
                             check=True).stdout
    key = hashlib.sha256(b"\0".join([source, " ".join(FLAGS).encode(), version,
                                     _cpu_flags()])).hexdigest()[:20]
    folder = umadrive_cache() / "kernels"
    path = folder / f"edge_products-{key}.so"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".so.tmp")
    os.close(handle)
    try:
        done = subprocess.run([compiler, *FLAGS, "-o", temporary, str(SOURCE)],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise subprocess.SubprocessError(f"{compiler} exited with {done.returncode}: "
                                             f"{done.stderr.strip()[-2000:]}")
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    log.info("compiled the per-edge product kernels into %s", path)
    return path


def _cpu_flags() -> bytes:
    """The CPU's feature flags (what ``-march=native`` compiles for), where Linux tells."""
    try:
        for line in Path("/proc/cpuinfo").read_bytes().splitlines():
            if line.startswith((b"flags", b"Features")):
                return line
    except OSError:
        pass
    return os.uname().machine.encode()
