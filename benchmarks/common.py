"""Shared pieces of the driver benchmarks: the test structures, a fresh set of
positions per step, subprocess environments, the heap's release, and the
markdown/JSON output."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import platform
from pathlib import Path

import ase
import numpy as np

from umadrive import crystals
from umadrive.structure import Structure

OUT = Path(__file__).resolve().parent / "out"
ROOT = Path(__file__).resolve().parents[1]
FIXTURE_MODEL = ROOT / "tests" / "data" / "uma_s1p1.pt"


def cu3au(repeat: tuple[int, int, int]) -> ase.Atoms:
    """L1_2 Cu3Au (:func:`umadrive.crystals.cu3au`) repeated, rattled."""
    atoms = crystals.cu3au(repeat)
    atoms.rattle(0.03, seed=7)
    return atoms


def perturbed(atoms: ase.Atoms, count: int, seed: int = 0) -> list[Structure]:
    """``count`` structures with fresh positions, so no result comes from a cache."""
    rng = np.random.default_rng(seed)
    return [Structure(positions=atoms.positions + rng.normal(0, 0.02, atoms.positions.shape),
                      cell=atoms.cell.array.copy(), pbc=atoms.pbc.copy()) for _ in range(count)]


def subprocess_env(threads: int = 1) -> dict:
    """The environment of a measured subprocess: ``threads`` torch/OpenMP threads
    (one by default), PYTHONPATH at the repository."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads),
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def return_free_memory() -> None:
    """Gives the heap's free memory back to the kernel (glibc's ``malloc_trim``).

    A process that keeps freed memory for reuse (:mod:`umadrive.process_memory`,
    as ``umadrive serve`` does) holds on to everything it ever freed: what an
    earlier part of a benchmark freed would otherwise stay resident, varying from
    run to run, and count against the memory a model finds free when it loads."""
    libc = ctypes.util.find_library("c")
    if libc is not None and hasattr(ctypes.CDLL(libc), "malloc_trim"):
        ctypes.CDLL(libc).malloc_trim(0)


def write_results(name: str, table: list[str], results: dict) -> None:
    """Prints the markdown table and writes ``benchmarks/out/<name>.json``."""
    print("\n".join(table))
    OUT.mkdir(exist_ok=True)
    results = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               **results}
    (OUT / f"{name}.json").write_text(json.dumps(results, indent=2))
