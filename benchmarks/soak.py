"""Soak: ASE's own SocketIOCalculator drives ``umadrive serve --model ase:emt``
for many steps (default 100,000) on a small periodic copper cell, every step a
new random displacement. Every ``--check-every``-th answer is compared with
direct EMT (energy, forces, stress); the driver's resident memory (VmRSS) is
sampled every 1,000 steps. Prints a markdown table and writes
benchmarks/out/soak.json.

    python benchmarks/soak.py [--steps 100000] [--check-every 100]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase.io
import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.socketio import SocketIOCalculator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_results  # noqa: E402

RSS_EVERY = 1000


def rss_bytes(pid: int) -> int:
    """Resident memory of a running process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--check-every", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1, help="copper cell repeats (1: 4 atoms)")
    args = parser.parse_args()
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(args.repeat)
    reference = atoms.copy()
    reference.calc = EMT()
    rng = np.random.default_rng(7)
    rss: list[tuple[int, int]] = []
    worst = {"energy": 0.0, "forces": 0.0, "stress": 0.0}
    checks = 0
    with tempfile.TemporaryDirectory() as folder:
        template = Path(folder) / "copper.extxyz"
        ase.io.write(template, atoms)
        name = f"soak-{os.getpid()}"
        with SocketIOCalculator(unixsocket=name, timeout=120) as calc:
            driver = subprocess.Popen(
                [sys.executable, "-m", "umadrive", "serve", "--model", "ase:emt", "--structure",
                 str(template), "--unix", name, "--log-every", "0"], stderr=subprocess.DEVNULL)
            try:
                probe = atoms.copy()
                probe.calc = calc
                start = time.perf_counter()
                for step in range(args.steps):
                    probe.positions = atoms.positions + rng.normal(0, 0.05, atoms.positions.shape)
                    energy = probe.get_potential_energy()
                    if step % args.check_every == 0:
                        reference.positions = probe.positions
                        worst["energy"] = max(worst["energy"],
                                              abs(energy - reference.get_potential_energy()))
                        worst["forces"] = max(worst["forces"], float(np.abs(
                            probe.get_forces() - reference.get_forces()).max()))
                        worst["stress"] = max(worst["stress"], float(np.abs(
                            probe.get_stress() - reference.get_stress()).max()))
                        checks += 1
                    if step % RSS_EVERY == 0:
                        rss.append((step, rss_bytes(driver.pid)))
                seconds = time.perf_counter() - start
                rss.append((args.steps, rss_bytes(driver.pid)))
            finally:
                calc.close()
                status = driver.wait(timeout=60)
    values = [r for _, r in rss[1:]]  # after the first step: the model and the run set up
    mib = 1 << 20
    results = {"steps": args.steps, "atoms": len(atoms), "checks": checks,
               "max_abs_deviation": worst, "driver_exit_status": status,
               "seconds": seconds, "ms_per_step": 1e3 * seconds / args.steps,
               "rss_start_bytes": values[0], "rss_end_bytes": values[-1],
               "rss_max_bytes": max(values), "rss_samples": rss}
    table = [f"Soak: {args.steps} steps, {len(atoms)} Cu atoms, ASE SocketIOCalculator -> "
             "umadrive serve --model ase:emt", "",
             "| steps | ms/step | checked answers | max |ΔE| eV | max |ΔF| eV/Å | max |Δσ| eV/Å³ "
             "| RSS start / end / max MiB | exit |",
             "|---:|---:|---:|---:|---:|---:|---|---:|",
             f"| {args.steps} | {results['ms_per_step']:.3f} | {checks} | {worst['energy']:.1e} "
             f"| {worst['forces']:.1e} | {worst['stress']:.1e} | {values[0] / mib:.1f} / "
             f"{values[-1] / mib:.1f} / {max(values) / mib:.1f} | {status} |"]
    write_results("soak", table, results)


if __name__ == "__main__":
    main()
