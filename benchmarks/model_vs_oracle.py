"""Our UMA forward+backward against fairchem-core's, same checkpoint, same system.

    python benchmarks/model_vs_oracle.py --version 1.2.1 \
        [--checkpoint /tmp/uma-s-1p2p1-random.pt] [--modes default turbo] \
        [--calls 5] [--threads 2] [--profile]

The checkpoint is a random one with the sizes and format of UMA-S-1.2.1
(``--version 1.2.1``, the default) or UMA-S-1.1 (``--version 1.1``), written by
``tools/make_reference_fixtures.py --benchmark-checkpoint PATH --benchmark-version V``
(oracle venv; made on the fly when PATH does not exist). The system is 108-atom fcc
Cu (3x3x3 conventional cells, rattled), task omat, float32. Modes (``--modes``):

* ``unmerged``: experts routed, no activation checkpointing, no compile;
* ``default``: the default preset (routed experts, activation checkpointing);
* ``turbo``: the turbo preset on a CPU (experts merged, no activation
  checkpointing, ``torch.compile``; tf32 and CUDA graphs act on GPUs only).

The same settings are given to both sides. One call = energy, forces and stress
of the system, graph generation included. The oracle side runs in the oracle venv
as a subprocess (``--oracle-python``), ours in this process, each on ``--threads``
threads; per mode, after one warm-up call each (the compile, for turbo), ``--calls``
timed calls alternate between the two (so that load from other processes affects
both alike). Prints a markdown table (medians and the oracle/ours ratio per mode)
and the largest energy and force differences between the two; writes
``benchmarks/out/model_vs_oracle.json``; with ``--profile``, where our time goes
(torch.profiler, last mode).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"

#: The settings each mode gives both implementations (besides float32, graph v2, no tf32).
MODES = {
    "unmerged": dict(activation_checkpointing=False, merge_mole=False, compile=False),
    "default": dict(activation_checkpointing=True, merge_mole=False, compile=False),
    "turbo": dict(activation_checkpointing=False, merge_mole=True, compile=True),
}
CHECKPOINTS = {"1.1": Path("/tmp/uma-s-random.pt"), "1.2.1": Path("/tmp/uma-s-1p2p1-random.pt")}

ORACLE_WORKER = r"""
import json, sys, time
import numpy as np, torch
from ase import Atoms
from fairchem.core.datasets.atomic_data import AtomicData, atomicdata_list_to_batch
from fairchem.core.units.mlip_unit.api.inference import InferenceSettings
from fairchem.core.units.mlip_unit.predict import MLIPPredictUnit

args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
atoms = Atoms(numbers=args["numbers"], positions=args["positions"], cell=args["cell"], pbc=True)
settings = InferenceSettings(tf32=False, external_graph_gen=False,
                             internal_graph_gen_version=2, base_precision_dtype=torch.float32,
                             **args["settings"])
unit = MLIPPredictUnit(args["checkpoint"], device="cpu", inference_settings=settings)

def call():
    data = AtomicData.from_ase(atoms, task_name="omat", r_edges=False,
                               r_data_keys=["charge", "spin"])
    return unit.predict(atomicdata_list_to_batch([data]))

out = call()
print("READY", flush=True)
for line in sys.stdin:
    if line.strip() != "call":
        break
    start = time.perf_counter()
    out = call()
    print("TIME " + json.dumps(time.perf_counter() - start), flush=True)
print("RESULT " + json.dumps({"energy": float(out["energy"].detach()[0]),
                              "forces": out["forces"].detach().double().tolist()}), flush=True)
"""


def copper_108() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))
    atoms.rattle(0.03, seed=0)
    return atoms.numbers, atoms.positions, atoms.cell.array


class OracleWorker:
    """fairchem's predict unit in the oracle venv, answering one timed call at a time."""

    def __init__(self, oracle_python: str, checkpoint: Path, threads: int, mode: str) -> None:
        numbers, positions, cell = copper_108()
        payload = json.dumps({"checkpoint": str(checkpoint), "threads": threads,
                              "settings": MODES[mode],
                              "numbers": numbers.tolist(), "positions": positions.tolist(),
                              "cell": cell.tolist()})
        self.process = subprocess.Popen([oracle_python, "-c", ORACLE_WORKER, payload],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        self._expect("READY")

    def _expect(self, tag: str) -> str:
        for line in self.process.stdout:
            if line.startswith(tag):
                return line[len(tag):].strip()
        raise RuntimeError(f"the oracle worker exited (code {self.process.wait()}) before {tag}")

    def timed_call(self) -> float:
        self.process.stdin.write("call\n")
        self.process.stdin.flush()
        return json.loads(self._expect("TIME"))

    def finish(self) -> dict:
        self.process.stdin.write("done\n")
        self.process.stdin.flush()
        result = json.loads(self._expect("RESULT"))
        self.process.wait(timeout=60)
        return result


def our_unit(checkpoint: Path, mode: str):
    from umadrive.model import InferenceSettings, System, get_predict_unit
    from umadrive.structure import Structure

    numbers, positions, cell = copper_108()
    settings = InferenceSettings(base_precision_dtype=torch.float32, **MODES[mode])
    unit = get_predict_unit(checkpoint, inference_settings=settings)
    system = System(numbers=numbers, structure=Structure(positions, cell, np.ones(3, bool)),
                    task="omat", charge=0, spin=0)
    return unit, system


def profile_table(unit, system) -> str:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        unit.predict([system])
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


def ensure_checkpoint(path: Path, oracle_python: str, version: str) -> None:
    if path.exists():
        return
    print(f"writing a UMA-S-{version}-sized random checkpoint to {path} (oracle venv) ...",
          flush=True)
    subprocess.run([oracle_python, str(REPO / "tools" / "make_reference_fixtures.py"),
                    "--benchmark-checkpoint", str(path), "--benchmark-version", version],
                   check=True)


def run_mode(mode: str, args) -> dict:
    """Warm-up then ``args.calls`` alternating timed calls of both sides in ``mode``."""
    oracle = OracleWorker(args.oracle_python, args.checkpoint, args.threads, mode)
    unit, system = our_unit(args.checkpoint, mode)
    try:
        started = time.perf_counter()
        unit.predict([system])  # warm-up (the compile, for turbo)
        our_first = time.perf_counter() - started
        oracle_times, our_times = [], []
        for _ in range(args.calls):
            oracle_times.append(oracle.timed_call())
            start = time.perf_counter()
            prediction = unit.predict([system])[0]
            our_times.append(time.perf_counter() - start)
        reference = oracle.finish()
    finally:
        if oracle.process.poll() is None:
            oracle.process.kill()
    result = {
        "mode": mode, "settings": MODES[mode], "calls": args.calls,
        "oracle_s": oracle_times, "ours_s": our_times, "ours_first_call_s": our_first,
        "oracle_median_s": statistics.median(oracle_times),
        "ours_median_s": statistics.median(our_times),
        "energy_difference_per_atom": abs(reference["energy"] - prediction.energy)
        / len(prediction.forces),
        "max_force_difference": float(np.abs(np.asarray(reference["forces"])
                                             - prediction.forces).max()),
    }
    if args.profile:
        result["profile"] = profile_table(unit, system)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--version", choices=sorted(CHECKPOINTS), default="1.2.1",
                        help="the UMA-S release the random checkpoint is shaped like")
    parser.add_argument("--checkpoint", type=Path,
                        help="default: /tmp/uma-s-random.pt (1.1) or /tmp/uma-s-1p2p1-random.pt")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=["default", "turbo"])
    parser.add_argument("--oracle-python", default=".oracle/bin/python")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    args.checkpoint = args.checkpoint or CHECKPOINTS[args.version]
    torch.set_num_threads(args.threads)
    ensure_checkpoint(args.checkpoint, args.oracle_python, args.version)

    results = [run_mode(mode, args) for mode in args.modes]
    print(f"\n108-atom fcc Cu, {args.checkpoint.name} (UMA-S-{args.version} format), float32, "
          f"{args.threads} threads, {args.calls} timed calls per side and mode after 1 warm-up\n")
    print("| mode | fairchem-core 2.24 median s/call | umadrive median s/call | "
          "ratio (fairchem / umadrive) | umadrive first call s |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['mode']} | {r['oracle_median_s']:.3f} | {r['ours_median_s']:.3f} | "
              f"{r['oracle_median_s'] / r['ours_median_s']:.2f} | {r['ours_first_call_s']:.1f} |")
    for r in results:
        print(f"agreement ({r['mode']}): |dE|/atom = {r['energy_difference_per_atom']:.2e} eV, "
              f"max |dF| = {r['max_force_difference']:.2e} eV/Å")
    OUT.mkdir(exist_ok=True)
    (OUT / "model_vs_oracle.json").write_text(json.dumps(
        {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
         "version": args.version, "checkpoint": str(args.checkpoint), "threads": args.threads,
         "results": [{k: v for k, v in r.items() if k != "profile"} for r in results]},
        indent=2))
    if args.profile:
        print(f"\numadrive, one call ({results[-1]['mode']}), by self CPU time:\n")
        print(results[-1]["profile"])


if __name__ == "__main__":
    main()
