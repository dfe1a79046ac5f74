"""MPICH's node-local shared memory, ``/dev/shm/mpich_shm_*``: MPICH creates a
segment in ``MPI_Init`` (1 MB for a single process such as ``umadrive
lammps``, named after its pid; 2 MB for an ``mpiexec`` job) and unlinks it in
``MPI_Finalize``. A process that ends without finalizing (``os._exit`` from a
LAMMPS callback, a signal, ``MPI_Abort``) leaves the file behind for good.

:func:`unlink_mapped_segments` removes the names of the segments this process
has mapped: the mappings stay valid, so MPI goes on working, and nothing is
left however the process ends. Call it once every process of the node has
attached (after ``MPI_Init`` for a single process; before ``MPI_Abort`` for a
job). Linux only (``/proc/self/maps``); elsewhere it does nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

SEGMENT_PREFIX = "/dev/shm/mpich_shm_"


def unlink_mapped_segments(maps: Path = Path("/proc/self/maps")) -> list[str]:
    """Unlinks every MPICH segment this process maps and whose name still
    exists; returns the paths unlinked."""
    try:
        lines = maps.read_text().splitlines()
    except OSError:
        return []
    paths = set()
    for line in lines:
        fields = line.split()
        # address perms offset dev inode path [(deleted)]: six fields while the name exists
        if len(fields) == 6 and fields[5].startswith(SEGMENT_PREFIX):
            paths.add(fields[5])
    unlinked = []
    for path in sorted(paths):
        try:
            os.unlink(path)
        except FileNotFoundError:  # another rank of the job was first
            continue
        unlinked.append(path)
    return unlinked
