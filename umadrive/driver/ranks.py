"""Which MPI rank this process is, read from the launcher's environment (no MPI
import), and the device each rank of ``mpiexec -n K umadrive serve`` takes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# (rank, size, local rank) variables of the launchers, first match wins:
# MPICH/Hydra and Intel MPI, Open MPI, Slurm's srun.
_LAUNCHER_VARIABLES = (
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
)


@dataclass(frozen=True)
class Rank:
    """rank of size in the job; local: the rank among those on this node."""

    rank: int
    size: int
    local: int


def launcher_rank(environ: Mapping[str, str]) -> Rank | None:
    """This process's rank from an MPI launcher's variables, or None when it was
    not started by one (or by a single-process job)."""
    for rank_name, size_name, local_name in _LAUNCHER_VARIABLES:
        if rank_name in environ and size_name in environ:
            try:
                rank, size = int(environ[rank_name]), int(environ[size_name])
                local = int(environ.get(local_name, rank))
            except ValueError:
                continue
            return Rank(rank=rank, size=size, local=local) if size > 1 else None
    return None


def rank_device(requested: str, rank: Rank | None, cuda_devices: int) -> str:
    """The device this process takes: ``cuda`` becomes ``cuda:(local rank %
    cuda_devices)`` (``cuda:0`` outside MPI) when CUDA devices are visible;
    anything else (``cpu``, ``cuda:N``, ``cuda`` with none visible, a typo) is
    returned as given, for the model loader to check
    (:func:`umadrive.driver.backends.uma.torch_device`)."""
    if requested != "cuda" or cuda_devices < 1:
        return requested
    local = rank.local if rank is not None else 0
    return f"cuda:{local % cuda_devices}"
