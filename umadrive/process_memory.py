"""Keep freed memory in the process for reuse: what a long-running CPU force
server wants from glibc's ``malloc``.

A step allocates and frees the same large tensors every time (edge features of
hundreds of MiB for a batch of beads). glibc serves blocks above its mmap
threshold (at most 32 MiB unless told otherwise) with fresh ``mmap`` calls and
returns them to the kernel on ``free``; every step then pays page faults and the
kernel's zeroing of every page again. On the 2-core development machine this
made a batch of 16 108-atom structures cost twice as much per structure as a
single call (``benchmarks/batch_scaling.py``). Raising the mmap threshold and
turning trimming off makes ``malloc`` keep those blocks and hand them out again
(a trim threshold of 2 GiB was not enough: a batch whose step needs more than
that had its memory trimmed and faulted in again at every step): the process's
resident memory then stays at the peak of a step instead of falling back
between steps.

This changes the whole process, so only a program's entry point calls
:func:`keep_freed_memory` (``umadrive serve``, ``bench``, ``compile`` do); the
library never does. Another program can call it at its start too, or set
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` in its environment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: The largest mmap threshold mallopt takes (an int): blocks up to 2 GiB come from the heap.
_LARGEST = 2**31 - 1
#: mallopt's value is an int that glibc reads as a size_t: -1 is "never" (SIZE_MAX).
_NEVER = -1
_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Tell glibc's ``malloc`` to serve blocks of up to 2 GiB from its heap and
    never to give the heap's free top back to the kernel. Returns whether it
    did: False without glibc, or when the environment already sets either
    threshold (the user's choice is kept)."""
    if any(name in os.environ for name in _ENVIRONMENT):
        log.debug("malloc thresholds left as the environment sets them")
        return False
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    try:
        mallopt = ctypes.CDLL(libc_name).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, _LARGEST) and mallopt(_M_TRIM_THRESHOLD, _NEVER))
