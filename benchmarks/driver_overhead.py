"""Per-step cost of serving forces through the i-PI socket versus calling the
same backend directly, at 32, 108 and 1,000 atoms of Cu3Au.

A ForceServer in this process sends one structure per step to ``umadrive serve``
(a subprocess, unix socket) and waits for the answer; the direct side calls the
backend the driver uses, in this process. The two sides alternate step by step
(so load from other processes hits both alike); each runs one torch thread.
Medians; prints a markdown table and writes benchmarks/out/driver_overhead.json
(``driver_overhead_fairchem.json`` for a ``fairchem:`` model).

    python benchmarks/driver_overhead.py [--model tests/data/uma_s1p1.pt] [--steps 30]
    python benchmarks/driver_overhead.py --model fairchem:tests/data/uma_s1p1.pt
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase.io
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import FIXTURE_MODEL, cu3au, subprocess_env, perturbed, write_results  # noqa: E402
from umadrive.driver.backends import UmaOptions, make_backend  # noqa: E402
from umadrive.protocol import ForceServer  # noqa: E402

SIZES = {32: (2, 2, 2), 108: (3, 3, 3), 1000: (5, 5, 10)}


def timed(call, structure) -> float:
    start = time.perf_counter()
    call([structure])
    return time.perf_counter() - start


def measure(args, atoms, steps: int, folder: Path) -> tuple[list[float], list[float]]:
    """(direct times, socket times) in seconds, alternating, after warm-up steps."""
    structure_file = folder / f"cu3au_{len(atoms)}.extxyz"
    ase.io.write(structure_file, atoms)
    direct = make_backend(args.model, atoms, uma=UmaOptions(task=args.task, mode=args.mode))
    name = f"bench-{os.getpid()}-{len(atoms)}"
    with ForceServer(unix=name, timeout=600) as server:
        driver = subprocess.Popen(
            [sys.executable, "-m", "umadrive", "serve", "--model", args.model, "--task", args.task,
             "--mode", args.mode, "--structure", str(structure_file), "--unix", name,
             "--log-every", "0"], env=subprocess_env(), stderr=None if args.verbose else subprocess.DEVNULL)
        try:
            server.accept(timeout=120)
            for structure in perturbed(atoms, 3, seed=1):  # warm-up, both sides
                timed(direct.compute, structure)
                timed(server.compute, structure)
            direct_times, socket_times = [], []
            for structure in perturbed(atoms, steps):
                direct_times.append(timed(direct.compute, structure))
                socket_times.append(timed(server.compute, structure))
            server.close()
            driver.wait(timeout=60)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    return direct_times, socket_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(FIXTURE_MODEL),
                        help="UMA checkpoint, 'fairchem:CHECKPOINT' or 'ase:emt' (default: the "
                        "tiny test fixture)")
    parser.add_argument("--task", default="omat")
    parser.add_argument("--mode", default="default")
    parser.add_argument("--steps", type=int, default=30, help="timed steps at 32 and 108 atoms "
                        "(fewer at 1,000: 108/1000 of it, at least 8)")
    parser.add_argument("--verbose", action="store_true", help="show the driver's log")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, results = [], []
    with tempfile.TemporaryDirectory() as folder:
        for n_atoms in args.sizes:
            steps = max(8, args.steps * 108 // max(n_atoms, 108))
            direct, socket = measure(args, cu3au(SIZES[n_atoms]), steps, Path(folder))
            d, s = statistics.median(direct), statistics.median(socket)
            results.append({"atoms": n_atoms, "steps": steps, "direct_median_s": d,
                            "socket_median_s": s, "ratio": s / d})
            rows.append(f"| {n_atoms} | {d * 1e3:.2f} | {s * 1e3:.2f} | {(s - d) * 1e3:.2f} | "
                        f"{s / d:.3f} |")
    fairchem = args.model.startswith("fairchem:")
    label = ("fairchem:" if fairchem else "") + Path(args.model.removeprefix("fairchem:")).name
    header = [f"Driver overhead, {label} ({args.mode} mode), one thread each side; "
              "medians", "",
              "| atoms | direct call ms | umadrive serve (unix socket) ms | overhead ms | ratio |",
              "|---:|---:|---:|---:|---:|"]
    write_results("driver_overhead_fairchem" if fairchem else "driver_overhead", header + rows,
                  {"model": args.model, "mode": args.mode, "results": results})


if __name__ == "__main__":
    main()
