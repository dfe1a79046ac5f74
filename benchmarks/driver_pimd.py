"""Path-integral throughput: real i-PI runs PIMD with 32 beads of Cu3Au and
umadrive answers (a) 32 sequential requests on one connection, (b) with
``--connections 32``, (c) with i-PI's ``batch_size 32`` on one connection, and
(d) ``i-pi-py_driver`` serves the same model through umadrive's ASE
``UMACalculator`` (benchmarks/uma_ase_pes.py). Every driver runs one torch
thread.

Time per MD step: the interval between successive lines of i-PI's property
file (polled every 5 ms), median over the steps after the first two of each run;
the variants alternate for ``--rounds`` rounds. Prints a
markdown table and writes benchmarks/out/driver_pimd.json.

    python benchmarks/driver_pimd.py [--model tests/data/uma_s1p1.pt] [--steps 8] [--repeat 2 2 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase.io

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import FIXTURE_MODEL, cu3au, subprocess_env, write_results  # noqa: E402
from umadrive.ipi_input import IpiRun, ipi_input_xml  # noqa: E402

NBEADS = 32
SKIP_STEPS = 2
PES = Path(__file__).resolve().parent / "uma_ase_pes.py"


def step_times(args, folder: Path, name: str, batch_size: int, driver_argv: list[str]) -> list[float]:
    """Runs i-PI with the driver command; returns the seconds between steps."""
    socket_name = f"bench-pimd-{os.getpid()}-{name.split()[0]}"
    run = IpiRun(structure="start.extxyz", unix=socket_name, ensemble="nvt", nbeads=NBEADS,
                 batch_size=batch_size, steps=args.steps, properties=("step", "potential"))
    (folder / "input.xml").write_text(ipi_input_xml(run))
    out = folder / "sim.out"
    out.unlink(missing_ok=True)
    ipi_exe = shutil.which("i-pi") or str(Path(sys.executable).with_name("i-pi"))
    ipi_log, driver_log = folder / "ipi.log", folder / "driver.log"
    with open(ipi_log, "w") as ipi_out, open(driver_log, "w") as driver_out:
        children = [subprocess.Popen([ipi_exe, "input.xml"], cwd=folder, stdout=ipi_out,
                                     stderr=subprocess.STDOUT)]
        argv = [a.replace("{socket}", socket_name) for a in driver_argv]
        children.append(subprocess.Popen(argv, cwd=folder, env=subprocess_env(),
                                         stdout=driver_out, stderr=subprocess.STDOUT))
    ipi, driver = children
    seen, stamps = 0, []
    try:
        deadline = time.monotonic() + args.timeout
        while ipi.poll() is None and time.monotonic() < deadline:
            if driver.poll() == 0:  # after i-PI's EXIT: i-PI is finishing
                deadline = min(deadline, time.monotonic() + 60)
            elif driver.poll() is not None:  # i-PI would wait for it until the deadline
                raise RuntimeError(f"{name}: the driver exited with status {driver.returncode} "
                                   f"while i-PI was running; its output ({driver_log}):\n"
                                   f"{driver_log.read_text()[-3000:]}")
            lines = [l for l in out.read_text().splitlines() if not l.startswith("#")] if out.exists() else []
            if len(lines) > seen:
                stamps += [time.perf_counter()] * (len(lines) - seen)
                seen = len(lines)
            time.sleep(0.005)
        if ipi.poll() is None:
            raise RuntimeError(f"{name}: i-PI did not finish within {args.timeout} s; "
                               f"i-PI's output:\n{ipi_log.read_text()[-2000:]}\n"
                               f"the driver's:\n{driver_log.read_text()[-2000:]}")
        if ipi.returncode != 0:
            raise RuntimeError(f"{name}: i-PI exited with status {ipi.returncode}:\n"
                               f"{ipi_log.read_text()[-3000:]}")
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait()
    intervals = [b - a for a, b in zip(stamps, stamps[1:])]
    return intervals[SKIP_STEPS:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(FIXTURE_MODEL))
    parser.add_argument("--task", default="omat")
    parser.add_argument("--steps", type=int, default=8, help="MD steps per run (default 8)")
    parser.add_argument("--repeat", type=int, nargs=3, default=[2, 2, 2],
                        help="Cu3Au cubic cells per direction (default 2 2 2: 32 atoms)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of every variant, "
                        "alternating (default 2)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    args = parser.parse_args()
    atoms = cu3au(tuple(args.repeat))
    serve = [sys.executable, "-m", "umadrive", "serve", "--model", args.model, "--task", args.task,
             "--structure", "start.extxyz", "--unix", "{socket}", "--log-every", "0"]
    variants = {
        "umadrive serve, 32 sequential requests": (1, serve),
        "umadrive serve --connections 32": (1, serve + ["--connections", str(NBEADS)]),
        "umadrive serve, batch_size 32": (NBEADS, serve),
        "i-pi-py_driver + UMACalculator": (1, [
            shutil.which("i-pi-py_driver") or str(Path(sys.executable).with_name("i-pi-py_driver")),
            "-m", "custom", "-P", str(PES), "-u", "-a", "{socket}",
            "-o", f"template=start.extxyz,model={args.model},task={args.task}"]),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ase.io.write(folder / "start.extxyz", atoms)
        for _ in range(args.rounds):  # variants alternate, so a change in load hits all alike
            for name, (batch_size, argv) in variants.items():
                times[name] += step_times(args, folder, name, batch_size, argv)
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["umadrive serve, 32 sequential requests"]
    table = [f"PIMD, {NBEADS} beads x {len(atoms)} atoms of Cu3Au, {Path(args.model).name}, one "
             f"thread per driver; median s per MD step over {args.rounds} x {args.steps - SKIP_STEPS} "
             "steps", "",
             "| driver | s/step | beads/s | speed-up over sequential |", "|---|---:|---:|---:|"]
    table += [f"| {name} | {m:.3f} | {NBEADS / m:.1f} | {base / m:.2f} |" for name, m in medians.items()]
    write_results("driver_pimd", table, {
        "model": args.model, "atoms": len(atoms), "beads": NBEADS, "steps": args.steps,
        "rounds": args.rounds, "s_per_step": times,
        "median_s_per_step": medians,
        "speedup_over_sequential": {name: base / m for name, m in medians.items()}})


if __name__ == "__main__":
    main()
