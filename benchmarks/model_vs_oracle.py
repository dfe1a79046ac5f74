"""Our UMA forward+backward against fairchem-core's, same checkpoint, same system.

    python benchmarks/model_vs_oracle.py \
        --checkpoint /tmp/uma-s-random.pt [--calls 5] [--threads 2] [--profile]

The checkpoint is a UMA-S-1.1-sized random one written by
``tools/make_reference_fixtures.py --benchmark-checkpoint PATH`` (oracle venv; made
on the fly when PATH does not exist). The system is 108-atom fcc Cu (3x3x3
conventional cells, rattled), task omat, float32, experts unmerged, no activation
checkpointing, no compile. One call = energy, forces and stress of the system,
graph generation included. The oracle side runs in the oracle venv as a
subprocess (``--oracle-python``), ours in this process, each on ``--threads``
threads; after one warm-up call each, ``--calls`` timed calls alternate between
the two (so that load from other processes affects both alike). Prints a markdown
table (medians and the oracle/ours ratio), the largest force difference between
the two, and with ``--profile`` where our time goes (torch.profiler).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk

REPO = Path(__file__).resolve().parents[1]

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
settings = InferenceSettings(tf32=False, activation_checkpointing=False, merge_mole=False,
                             compile=False, external_graph_gen=False,
                             internal_graph_gen_version=2, base_precision_dtype=torch.float32)
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

    def __init__(self, oracle_python: str, checkpoint: Path, threads: int) -> None:
        numbers, positions, cell = copper_108()
        payload = json.dumps({"checkpoint": str(checkpoint), "threads": threads,
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


def our_unit(checkpoint: Path):
    from umadrive.model import InferenceSettings, System, get_predict_unit
    from umadrive.structure import Structure

    numbers, positions, cell = copper_108()
    settings = InferenceSettings(activation_checkpointing=False, merge_mole=False,
                                 base_precision_dtype=torch.float32)
    unit = get_predict_unit(checkpoint, inference_settings=settings)
    system = System(numbers=numbers, structure=Structure(positions, cell, np.ones(3, bool)),
                    task="omat", charge=0, spin=0)
    return unit, system


def profile_table(unit, system) -> str:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        unit.predict([system])
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


def ensure_checkpoint(path: Path, oracle_python: str) -> None:
    if path.exists():
        return
    print(f"writing a UMA-S-sized random checkpoint to {path} (oracle venv) ...", flush=True)
    subprocess.run([oracle_python, str(REPO / "tools" / "make_reference_fixtures.py"),
                    "--benchmark-checkpoint", str(path)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/uma-s-random.pt"))
    parser.add_argument("--oracle-python", default=".oracle/bin/python")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ensure_checkpoint(args.checkpoint, args.oracle_python)

    oracle = OracleWorker(args.oracle_python, args.checkpoint, args.threads)
    unit, system = our_unit(args.checkpoint)
    unit.predict([system])  # warm-up
    oracle_times, our_times = [], []
    try:
        for _ in range(args.calls):
            oracle_times.append(oracle.timed_call())
            start = time.perf_counter()
            prediction = unit.predict([system])[0]
            our_times.append(time.perf_counter() - start)
        reference = oracle.finish()
    finally:
        if oracle.process.poll() is None:
            oracle.process.kill()
    oracle_median = statistics.median(oracle_times)
    ours_median = statistics.median(our_times)
    force_difference = float(np.abs(np.asarray(reference["forces"]) - prediction.forces).max())
    energy_difference = abs(reference["energy"] - prediction.energy) / len(prediction.forces)

    print(f"\n108-atom fcc Cu, UMA-S-1.1-sized random checkpoint, float32, unmerged, "
          f"no activation checkpointing, {args.threads} threads, {args.calls} calls after 1 warm-up\n")
    print("| implementation | median s/call | min s/call |")
    print("|---|---|---|")
    print(f"| fairchem-core 2.24 | {oracle_median:.3f} | {min(oracle_times):.3f} |")
    print(f"| umadrive | {ours_median:.3f} | {min(our_times):.3f} |")
    print(f"\nspeed-up (fairchem / umadrive median): {oracle_median / ours_median:.2f}x")
    print(f"agreement: |dE|/atom = {energy_difference:.2e} eV, max |dF| = {force_difference:.2e} eV/Å")
    if args.profile:
        print("\numadrive, one call, by self CPU time:\n")
        print(profile_table(unit, system))


if __name__ == "__main__":
    main()
