"""``umadrive demo``: a short path-integral MD run of a bundled Cu3Au alloy, with
i-PI (or ASE) as the engine and ``umadrive serve`` answering its force requests.
Shows progress (the driver's own status while it loads), ends with a summary and
a PNG of the run (:mod:`umadrive.plots`), and leaves the outputs in a run folder.
When the driver stops early, its error lines are printed."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from umadrive.progress import Progress

DEFAULT_MODEL = "demo"  # the bundled UMA-architecture demo model (umadrive/data/demo)
DEFAULT_MODE = "turbo"
DEMO_STRUCTURE = "cu3au_108.extxyz"
SERVE_LOG = "serve.log"
PLOT = "run.png"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="backend spec (default %(default)s)")
    parser.add_argument("--mode", default=DEFAULT_MODE, metavar="default|turbo|FILE.json",
                        help="inference settings for a UMA model (default %(default)s)")
    parser.add_argument("--steps", type=int, default=100, help="MD steps (default %(default)s)")
    parser.add_argument("--beads", type=int, default=4,
                        help="path-integral beads, i-PI engine only (default %(default)s)")
    parser.add_argument("--engine", choices=("ipi", "ase"), default="ipi",
                        help="i-PI NVT PIMD, or ASE NVE MD with SocketIOCalculator (default %(default)s)")
    parser.add_argument("--temperature", type=float, default=300.0, help="K (default %(default)s)")
    parser.add_argument("--output", type=Path, default=None,
                        help="run folder (default ./umadrive-demo/<engine>-<time>)")


def run(args: argparse.Namespace) -> int:
    if args.steps < 1 or args.beads < 1:
        print(f"umadrive demo: --steps ({args.steps}) and --beads ({args.beads}) must be >= 1",
              file=sys.stderr)
        return 2
    folder = args.output or Path("umadrive-demo") / f"{args.engine}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    folder = folder.resolve()
    structure = folder / DEMO_STRUCTURE
    with resources.as_file(resources.files("umadrive.data") / DEMO_STRUCTURE) as bundled:
        shutil.copyfile(bundled, structure)
    socket_name = f"umadrive-demo-{os.getpid()}"
    engine = f"i-PI, {args.beads}-bead NVT PIMD" if args.engine == "ipi" else "ASE, NVE MD"
    print(f"umadrive demo: 108-atom Cu3Au, {engine}, {args.steps} steps, model {args.model}")
    print(f"  run folder {folder}")

    children: list[subprocess.Popen] = []
    try:
        serve = _start(children, folder / SERVE_LOG, _serve_command(args, structure, socket_name),
                       folder)
        start = time.perf_counter()
        if args.engine == "ipi":
            table, md_seconds = _run_ipi(args, folder, structure, socket_name, children, serve)
        else:
            table, md_seconds = _run_ase(args, folder, structure, socket_name, serve)
        elapsed = time.perf_counter() - start
        serve_status = serve.wait(timeout=30)
    except KeyboardInterrupt:
        print("\numadrive demo: interrupted; stopping i-PI and the driver", file=sys.stderr)
        return 130
    except _DemoFailed as error:
        print(f"umadrive demo: {error}", file=sys.stderr)
        return 1
    finally:
        _stop(children)
    if serve_status != 0:
        print(f"umadrive demo: {_driver_stopped(folder, serve_status)}", file=sys.stderr)
        return 1
    _summary(table, elapsed, md_seconds, folder,
             args.temperature if args.engine == "ipi" else None)
    return 0


def _driver_stopped(folder: Path, status: int) -> str:
    """The driver's exit status and its error lines (its last lines if none)."""
    lines = (folder / SERVE_LOG).read_text(errors="replace").splitlines()
    errors = [line for line in lines if ": ERROR: " in line] or lines[-5:]
    shown = "\n  ".join(errors)
    return f"the driver stopped (status {status}):\n  {shown}\n(full log: {folder / SERVE_LOG})"


def _serve_command(args: argparse.Namespace, structure: Path, socket_name: str) -> list[str]:
    """``umadrive serve`` for the demo: a UMA model is warmed up (compiled, in
    turbo) before connecting, and with i-PI each bead gets its own connection so
    that a step's beads are computed in one forward pass."""
    from umadrive.plots import SERVE_LOG_JSON

    command = [sys.executable, "-m", "umadrive", "serve", "--model", args.model,
               "--structure", str(structure), "--unix", socket_name, "--connect-timeout", "300",
               "--log-json", SERVE_LOG_JSON, "--log-every", "10"]
    if not args.model.startswith("ase:"):
        command += ["--mode", args.mode, "--warmup"]
    if args.engine == "ipi":
        command += ["--connections", str(args.beads)]
    return command


class _DemoFailed(RuntimeError):
    pass


def _start(children: list[subprocess.Popen], log: Path, argv: list[str], cwd: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        child = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    children.append(child)
    return child


def _stop(children: list[subprocess.Popen]) -> None:
    """SIGINT first (i-PI then writes its outputs and exits), kill after 10 s."""
    for child in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
    for child in reversed(children):
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _run_ipi(args, folder: Path, structure: Path, socket_name: str,
             children: list[subprocess.Popen], serve: subprocess.Popen):
    import numpy as np

    from umadrive.ipi_input import IpiRun, ipi_input_xml

    run = IpiRun(structure=structure.name, steps=args.steps, unix=socket_name, ensemble="nvt",
                 nbeads=args.beads, temperature_k=args.temperature, timestep_fs=1.0)
    (folder / "input.xml").write_text(ipi_input_xml(run))
    ipi_executable = shutil.which("i-pi") or str(Path(sys.executable).with_name("i-pi"))
    ipi = _start(children, folder / "ipi.log", [ipi_executable, "input.xml"], folder)
    properties = folder / f"{run.output_prefix}.out"
    with Progress(args.steps, "MD steps", unit="step") as progress:
        while ipi.poll() is None:
            if serve.poll() not in (None, 0):
                raise _DemoFailed(_driver_stopped(folder, serve.returncode))
            _show(progress, _read_table(properties, np), folder)
            time.sleep(0.2)
        if ipi.returncode != 0:
            raise _DemoFailed(f"i-PI exited with status {ipi.returncode}; see {folder / 'ipi.log'}")
        table = _read_table(properties, np)
        _show(progress, table, folder)
    # columns: step, time/ps, conserved/eV, temperature/K, potential/eV, volume/Å³
    return table[:, [0, 2, 3]], progress.elapsed_s()


def _run_ase(args, folder: Path, structure: Path, socket_name: str, serve: subprocess.Popen):
    import ase.io
    import numpy as np
    from ase import units
    from ase.calculators.socketio import SocketIOCalculator
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    atoms = ase.io.read(structure)
    MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, rng=np.random.default_rng(3348))
    rows = []
    with Progress(args.steps, "MD steps", unit="step") as progress:
        # ASE's socket server blocks while it waits: start it once the model is loaded
        while "ready; template" not in (folder / SERVE_LOG).read_text(errors="replace"):
            if serve.poll() is not None:
                raise _DemoFailed(_driver_stopped(folder, serve.returncode))
            _show(progress, np.zeros((0, 1)), folder)
            time.sleep(0.2)
        with SocketIOCalculator(unixsocket=socket_name, timeout=120) as calc:
            atoms.calc = calc
            dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs)

            def record() -> None:
                rows.append((dynamics.nsteps, atoms.get_total_energy(), atoms.get_temperature(),
                             atoms.get_potential_energy()))
                if dynamics.nsteps == 0:
                    progress.restart_clock()
                progress.update_to(dynamics.nsteps)

            dynamics.attach(record, interval=1)
            dynamics.run(args.steps)
    # i-PI's properties layout, so that `umadrive plot` reads both engines' folders
    header = "\n".join(f"column {i} --> {name}" for i, name in enumerate(
        ("step", "conserved{electronvolt}", "temperature{kelvin}", "potential{electronvolt}"), 1))
    np.savetxt(folder / "md.out", rows, header=header)
    return np.array(rows)[:, :3], progress.elapsed_s()


def _read_table(path: Path, np):
    """The i-PI properties written so far, (rows, 6); empty while there are none."""
    if not path.exists() or path.stat().st_size == 0:
        return np.zeros((0, 6))
    try:
        return np.loadtxt(path, comments="#", ndmin=2)
    except ValueError:  # the last line is still being written
        return np.zeros((0, 6))


def _show(progress: Progress, table, folder: Path) -> None:
    """Steps done; before the first one, the driver's latest log line. The rate
    and ETA count from the first recorded step (after loading and warm-up)."""
    if len(table):
        if progress.n == 0:
            progress.restart_clock()
        progress.update_to(int(table[-1, 0]))
        return
    lines = (folder / SERVE_LOG).read_text(errors="replace").splitlines()
    status = lines[-1].split(": ", 2)[-1] if lines else "starting"
    progress.update_to(0, f"driver: {status[:70]}")


def _summary(table, elapsed: float, md_seconds: float, folder: Path,
             target_k: float | None) -> None:
    """table columns: step, conserved quantity (eV), temperature (K). elapsed: the
    whole run (s); md_seconds: from the first recorded step on (s)."""
    steps = int(table[-1, 0] - table[0, 0])
    drift = (table[-1, 1] - table[0, 1]) / 108 * 1000
    print(f"done: {steps} steps in {elapsed:.1f} s ({steps / md_seconds:.2f} steps/s after "
          f"the {elapsed - md_seconds:.0f} s of loading and warm-up), "
          f"mean temperature {table[:, 2].mean():.1f} K, "
          f"conserved-quantity drift {drift:+.3f} meV/atom")
    print(f"outputs in {folder}")
    from umadrive.plots import read_run, write_png

    series = read_run(folder)
    if target_k is not None:
        series = dataclasses.replace(series, target_k=target_k)
    print(f"plot: {write_png(series, folder / PLOT)}")
