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
    """The device for this process: ``cuda`` becomes ``cuda:(local rank %
    cuda_devices)`` (``cuda:0`` outside MPI); ``cpu`` and an explicit
    ``cuda:N`` are kept. Raises ValueError when CUDA is asked for and none is
    visible, or ``cuda:N`` names a device that does not exist."""
    if requested == "cpu":
        return requested
    kind, _, index = requested.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ValueError(f"--device {requested!r}: expected cpu, cuda or cuda:N")
    if cuda_devices < 1:
        raise ValueError(f"--device {requested}: no CUDA device is visible; use --device cpu "
                         "or check CUDA_VISIBLE_DEVICES and the torch build")
    if index:
        if int(index) >= cuda_devices:
            raise ValueError(f"--device {requested}: only {cuda_devices} CUDA device(s) visible "
                             f"(cuda:0 to cuda:{cuda_devices - 1})")
        return requested
    local = rank.local if rank is not None else 0
    return f"cuda:{local % cuda_devices}"
