"""What the LAMMPS bridge costs per MD step, 108-atom CuAu (lammps_examples/cuau.data),
EMT as the model in every case:

* ``lammps pair_style zero``: LAMMPS alone integrating NVE (no forces at all);
* ``bridge``: ``umadrive lammps`` + ``umadrive serve --model ase:emt``;
* ``i-PI``: the same model through i-PI 3.3 (NVE, unix socket);
* ``EMT direct``: the model call itself, in this process.

LAMMPS times are its own "Loop time" per step, i-PI's its own average time per
step (printed every 100 steps), so neither includes start-up. Medians (and minima, less sensitive to other jobs on a shared
machine) over ``--repeats``, cases interleaved; prints a markdown table and writes
benchmarks/out/lammps_bridge.json.

    python benchmarks/lammps_bridge.py [--steps 200] [--repeats 3] [--replicate 1]   (--steps > 100)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase.io
import numpy as np
from ase.calculators.emt import EMT

REPO = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"
UMADRIVE = [sys.executable, "-m", "umadrive"]

LAMMPS_SCRIPT = """\
variable        steps index 100
units           metal
atom_style      atomic
read_data       cuau.data
replicate       {replicate} {replicate} {replicate}
pair_style      zero 6.0
pair_coeff      * *
{fix}
velocity        all create 600.0 87287 mom yes rot yes
fix             md all nve
timestep        0.002
thermo          ${{steps}}
run             ${{steps}}
"""

IPI_INPUT = """\
<simulation verbosity='medium'>
  <output prefix='bench'><properties stride='1000000' filename='out'>[step, potential]</properties></output>
  <total_steps>{steps}</total_steps>
  <prng><seed>12345</seed></prng>
  <ffsocket mode='unix' name='umadrive' pbc='false'><address>{socket}</address><latency>1e-4</latency></ffsocket>
  <system>
    <initialize nbeads='1'><file mode='ase'>template.extxyz</file>
      <velocities mode='thermal' units='kelvin'>600</velocities></initialize>
    <forces><force forcefield='umadrive'/></forces>
    <motion mode='dynamics'><dynamics mode='nve'><timestep units='femtosecond'>2.0</timestep></dynamics></motion>
  </system>
</simulation>
"""


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), path) if p)}


def _loop_seconds_per_step(output: str) -> float:
    match = re.search(r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps", output)
    if match is None:
        raise RuntimeError(f"no LAMMPS loop time in:\n{output[-2000:]}")
    return float(match.group(1)) / int(match.group(2))


def _socket(tag: str) -> str:
    return f"bench-{tag}-{os.getpid()}-{time.monotonic_ns()}"


def time_pair_zero(folder: Path, steps: int) -> float:
    lmp = shutil.which("lmp") or str(Path(sys.executable).with_name("lmp"))
    done = subprocess.run([lmp, "-in", "in.zero", "-var", "steps", str(steps), "-log", "none"],
                          cwd=folder, capture_output=True, text=True, timeout=600, env=_env(), check=True)
    return _loop_seconds_per_step(done.stdout)


def time_bridge(folder: Path, steps: int) -> tuple[float, float]:
    """(LAMMPS loop seconds per step, seconds per round trip to the model server)."""
    name = _socket("bridge")
    serve = subprocess.Popen([*UMADRIVE, "serve", "--model", "ase:emt", "--structure", "template.extxyz",
                              "--unix", name], cwd=folder, env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        done = subprocess.run([*UMADRIVE, "lammps", "in.bridge", "--unix", name, "--var", f"steps={steps}",
                               "--log", "none"], cwd=folder, capture_output=True, text=True, timeout=600,
                              env=_env(), check=True)
        serve.wait(timeout=60)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    round_trip = re.search(r"(\d+) force calls, ([0-9.]+) ms each round trip", done.stderr)
    if round_trip is None:
        raise RuntimeError(f"no force-call summary from umadrive lammps:\n{done.stderr[-2000:]}")
    return _loop_seconds_per_step(done.stdout), float(round_trip.group(2)) / 1e3


def time_ipi(folder: Path, steps: int) -> float:
    """i-PI's own average time per step (verbosity 'medium' prints it every 100
    steps), over the steps after step 0."""
    name = _socket("ipi")
    (folder / "ipi.xml").write_text(IPI_INPUT.format(steps=steps, socket=name))
    ipi_exe = shutil.which("i-pi") or str(Path(sys.executable).with_name("i-pi"))
    ipi = subprocess.Popen([ipi_exe, "ipi.xml"], cwd=folder, env=_env(), text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    serve = subprocess.Popen([*UMADRIVE, "serve", "--model", "ase:emt", "--structure", "template.extxyz",
                              "--unix", name], cwd=folder, env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        output, _ = ipi.communicate(timeout=600)
        if ipi.returncode != 0 or serve.wait(timeout=60) != 0:
            raise RuntimeError(f"i-PI or umadrive serve failed:\n{output[-2000:]}")
    finally:
        for process in (ipi, serve):
            if process.poll() is None:
                process.kill()
                process.wait()
    averages = [float(t) for step, t in re.findall(r"MD step\s+(\d+)\. t/step:\s*(\S+)", output) if int(step) > 0]
    if not averages:
        raise RuntimeError(f"no i-PI timings (need --steps > 100):\n{output[-2000:]}")
    return statistics.mean(averages)


def time_emt_direct(atoms, steps: int) -> float:
    """EMT forces and stress along a random walk of MD-sized moves (1 mÅ per step),
    so that, as in MD, every call is new and neighbour lists are rarely rebuilt."""
    rng = np.random.default_rng(0)
    atoms = atoms.copy()
    atoms.calc = EMT()
    moves = rng.normal(0.0, 1e-3, (steps, *atoms.positions.shape))
    start = time.perf_counter()
    for move in moves:
        atoms.positions = atoms.positions + move
        atoms.get_forces()
        atoms.get_stress()
    return (time.perf_counter() - start) / steps


def prepare(folder: Path, replicate: int) -> ase.Atoms:
    shutil.copy(REPO / "lammps_examples" / "cuau.data", folder)
    (folder / "in.zero").write_text(LAMMPS_SCRIPT.format(replicate=replicate, fix=""))
    (folder / "in.bridge").write_text(
        LAMMPS_SCRIPT.format(replicate=replicate, fix="fix umadrive all external pf/callback 1 1"))
    subprocess.run([*UMADRIVE, "lammps", "in.bridge", "--write-template", "template.extxyz", "--log", "none"],
                   cwd=folder, capture_output=True, text=True, timeout=600, env=_env(), check=True)
    return ase.io.read(folder / "template.extxyz")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--replicate", type=int, default=1, help="replicate the 108-atom cell N x N x N")
    args = parser.parse_args(argv)
    if args.steps <= 100:
        parser.error(f"--steps {args.steps}: i-PI reports its time per step every 100 steps "
                     "(verbosity 'medium'), so the i-PI case needs --steps > 100; e.g. --steps 200")
    if args.repeats < 1 or args.replicate < 1:
        parser.error(f"--repeats ({args.repeats}) and --replicate ({args.replicate}) must be >= 1")
    with tempfile.TemporaryDirectory(prefix="umadrive-bench-") as tmp:
        folder = Path(tmp)
        atoms = prepare(folder, args.replicate)
        cases = {
            "lammps pair_style zero": lambda: time_pair_zero(folder, args.steps),
            "bridge (umadrive lammps + serve)": lambda: time_bridge(folder, args.steps),
            "i-PI + serve": lambda: time_ipi(folder, args.steps),
            "EMT direct": lambda: time_emt_direct(atoms, args.steps),
        }
        samples: dict[str, list[float]] = {name: [] for name in cases}
        samples["bridge: round trip to serve"] = []
        for _ in range(args.repeats):  # interleaved, so that load changes hit every case
            for name, case in cases.items():
                value = case()
                if isinstance(value, tuple):
                    value, round_trip = value
                    samples["bridge: round trip to serve"].append(round_trip)
                samples[name].append(value)
    median = {name: statistics.median(values) for name, values in samples.items()}
    best = {name: min(values) for name, values in samples.items()}
    bridge = median["bridge (umadrive lammps + serve)"]
    direct = median["EMT direct"]
    report = {
        "atoms": len(atoms),
        "steps": args.steps,
        "repeats": args.repeats,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "seconds_per_step": samples,
        "median_ms_per_step": {name: 1e3 * value for name, value in median.items()},
        "min_ms_per_step": {name: 1e3 * value for name, value in best.items()},
        "overhead_ms_vs_direct_emt": {
            "bridge": 1e3 * (bridge - direct),
            "i-PI": 1e3 * (median["i-PI + serve"] - direct),
        },
        "bridge_over_ipi": bridge / median["i-PI + serve"],
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "lammps_bridge.json").write_text(json.dumps(report, indent=2))
    print(f"{len(atoms)} atoms, {args.steps} steps, median of {args.repeats}\n")
    print("| case | median ms/step | min ms/step | median / bridge |")
    print("|---|---:|---:|---:|")
    for name, value in median.items():
        print(f"| {name} | {1e3 * value:.3f} | {1e3 * best[name]:.3f} | {value / bridge:.2f} |")
    overhead = report["overhead_ms_vs_direct_emt"]
    print(f"\noverhead over the direct model call, ms/step: bridge {overhead['bridge']:.3f}, "
          f"i-PI {overhead['i-PI']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
