"""Per-step cost of serving forces through the i-PI socket: a ForceServer in this
process sends 108-atom fcc Cu structures to ``umadrive serve --model ase:emt``
(a subprocess) and waits for the answer; compared with calling EMT directly the
same way the driver does. Medians over many steps; prints a markdown table and
writes JSON to benchmarks/out/driver_overhead.json.

    python benchmarks/driver_overhead.py [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase.io
import numpy as np
from ase.build import bulk

from umadrive.driver.backend import make_backend
from umadrive.protocol import ForceServer
from umadrive.structure import Structure

OUT = Path(__file__).resolve().parent / "out"


def perturbed(atoms, steps: int, seed: int = 0) -> list[Structure]:
    """A fresh set of positions for every step, so no result comes from a cache."""
    rng = np.random.default_rng(seed)
    return [Structure(positions=atoms.positions + rng.normal(0, 0.02, atoms.positions.shape),
                      cell=atoms.cell.array.copy(), pbc=atoms.pbc.copy()) for _ in range(steps)]


def time_calls(call, structures) -> list[float]:
    times = []
    for structure in structures:
        start = time.perf_counter()
        call([structure])
        times.append(time.perf_counter() - start)
    return times


def time_socket(atoms, structure_file: Path, structures, warmup, transport: str) -> list[float]:
    name = f"bench-{os.getpid()}"
    address = {"unix": name} if transport == "unix" else {"host": "localhost", "port": 0}
    with ForceServer(**address, timeout=120) as server:
        where = (["--unix", name] if transport == "unix"
                 else ["--host", "localhost", "--port", str(server.address.port)])
        driver = subprocess.Popen([sys.executable, "-m", "umadrive", "serve", "--model", "ase:emt",
                                   "--structure", str(structure_file), *where],
                                  stderr=subprocess.DEVNULL)
        try:
            server.accept(timeout=60)
            time_calls(server.compute, warmup)
            times = time_calls(server.compute, structures)
            server.close()
            driver.wait(timeout=30)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per side (>= 50)")
    args = parser.parse_args()
    steps = max(args.steps, 50)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(3)  # 108 atoms
    structures = perturbed(atoms, steps)
    warmup = perturbed(atoms, 10, seed=1)
    direct = make_backend("ase:emt", atoms)
    time_calls(direct.compute, warmup)
    rows = {"direct EMT call": time_calls(direct.compute, structures)}
    with tempfile.TemporaryDirectory() as folder:
        structure_file = Path(folder) / "cu108.extxyz"
        ase.io.write(structure_file, atoms)
        for transport in ("unix", "inet"):
            rows[f"umadrive serve, {transport} socket"] = time_socket(
                atoms, structure_file, structures, warmup, transport)
    base = statistics.median(rows["direct EMT call"])
    results = []
    print(f"| path ({len(atoms)} atoms, median of {steps} steps) | ms/step | overhead ms | ratio |")
    print("|---|---:|---:|---:|")
    for label, times in rows.items():
        median = statistics.median(times)
        results.append({"path": label, "median_s": median, "overhead_s": median - base,
                        "ratio": median / base, "steps": steps})
        print(f"| {label} | {median * 1e3:.3f} | {(median - base) * 1e3:.3f} | {median / base:.3f} |")
    OUT.mkdir(exist_ok=True)
    (OUT / "driver_overhead.json").write_text(json.dumps({
        "atoms": len(atoms), "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
