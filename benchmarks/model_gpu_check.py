"""GPU checks for the inference settings, run by ``benchmarks/gpu_check.sh`` on a
machine with CUDA (not run in CI; untested until a session with a GPU runs it).

``correctness``: on the committed tiny checkpoint, CUDA float64 default against
fairchem's answers; CUDA float32 turbo (inductor compile, TF32, CUDA-graph Wigner
matrices, merged experts) against the CPU float32 default mode; that tf32 and
wigner_cuda report active, the TF32 switch is restored after a call, and the
Wigner graph is captured once over MD-like steps. Prints one PASS/FAIL line each;
exits 1 on a failure.

``bench``: a UMA-S-sized model with random weights (built here from the tiny
checkpoint's config with UMA-S sizes, written to /tmp), then ``umadrive bench``'s
timing of every mode at 108 and 1,000 atoms and the peak memory with and without
activation checkpointing at 4,000 atoms.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.model.helpers import checkpoint_path, reference_cases  # noqa: E402
from umadrive.commands import bench  # noqa: E402
from umadrive.model import InferenceSettings, get_predict_unit  # noqa: E402
from umadrive.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint  # noqa: E402
from umadrive.model.uma import UMA  # noqa: E402
from umadrive.testing import tolerance  # noqa: E402

UMA_S_SIZES = dict(sphere_channels=128, hidden_channels=128, edge_channels=128, lmax=2, mmax=2,
                   num_layers=4, num_experts=32, num_distance_basis=64, cutoff=6.0,
                   max_neighbors=300)
FAILURES: list[str] = []


def check(name: str, ok: bool, detail: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        FAILURES.append(name)


def deviation(a, b) -> tuple[float, float]:
    n = len(a.forces)
    return abs(a.energy - b.energy) / n, float(np.abs(a.forces - b.forces).max())


def correctness() -> None:
    cases = reference_cases("s1p1")
    default64 = get_predict_unit(checkpoint_path("s1p1"), "cuda",
                                 InferenceSettings(base_precision_dtype=torch.float64))
    tol = tolerance(torch.float64)
    for label, system, answer in cases:
        got = default64.predict([system])[0]
        de = abs(got.energy - answer["energy"]) / len(system.numbers)
        df = float(np.abs(got.forces - answer["forces"]).max())
        check(f"cuda float64 default = fairchem [{label}]",
              de <= tol.energy_per_atom and df <= tol.forces, f"dE/atom {de:.2e}, dF {df:.2e}")

    cpu = get_predict_unit(checkpoint_path("s1p1"), "cpu", "default")
    started = time.perf_counter()
    turbo = get_predict_unit(checkpoint_path("s1p1"), "cuda", "turbo")
    active = turbo.active_settings()
    check("turbo settings active on cuda", all(active[k] for k in ("tf32", "wigner_cuda",
                                                                     "merge_mole", "compile")),
          json.dumps(active))
    tol = tolerance(torch.float32)
    precision = torch.backends.cuda.matmul.fp32_precision
    for label, system, _ in cases:
        got, ref = turbo.predict([system])[0], cpu.predict([system])[0]
        de, df = deviation(got, ref)
        check(f"cuda turbo = cpu default, float32 [{label}]",
              de <= tol.energy_per_atom and df <= 10 * tol.forces,
              f"dE/atom {de:.2e}, dF {df:.2e} (TF32: forces to 10x the float32 tolerance)")
    check("TF32 switch restored after the calls",
          torch.backends.cuda.matmul.fp32_precision == precision, precision)
    print(f"turbo: first call (compile warm-up) {turbo.stats.warmup_s:.1f} s, "
          f"all {time.perf_counter() - started:.1f} s, merges {turbo.stats.merges}")

    label, system, _ = cases[5]
    captures = turbo.stats.wigner_captures
    rng = np.random.default_rng(3)
    worst = 0.0
    for _ in range(5):
        positions = system.structure.positions + rng.normal(scale=0.02, size=(len(system.numbers), 3))
        step = dataclasses.replace(system, structure=dataclasses.replace(system.structure, positions=positions))
        worst = max(worst, deviation(turbo.predict([step])[0], cpu.predict([step])[0])[1])
    check("wigner CUDA graph reused over MD steps",
          turbo.stats.wigner_captures == captures, f"captures {turbo.stats.wigner_captures}")
    check("MD steps in turbo on cuda = cpu default", worst <= 10 * tol.forces, f"dF {worst:.2e}")


def uma_s_checkpoint(path: Path) -> Path:
    small = load_checkpoint(checkpoint_path("s1p1"))
    config = copy.deepcopy(small.model_config)
    config["backbone"].update(UMA_S_SIZES)
    torch.manual_seed(5)
    model = UMA(config, small.tasks_config)
    save_checkpoint(path, Checkpoint(config, model.state_dict(), small.tasks_config, "umadrive"))
    return path


def run_bench(out: Path, atoms: list[int], repeats: int, memory_atoms: int) -> None:
    checkpoint = str(uma_s_checkpoint(Path("/tmp/uma-s-random-gpu.pt")))
    results = []
    with out.open("w") as stream:
        for size in atoms:
            batch = bench.time_modes(checkpoint, size, list(bench.MODES), repeats, "cuda")
            if memory_atoms and size == atoms[-1]:
                batch += bench.measure_memory(checkpoint, memory_atoms, "cuda", 0)
            for result in batch:
                print(json.dumps(result), flush=True)
                stream.write(json.dumps(result) + "\n")
            results += batch
    print(bench.table(results))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("correctness", "bench"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "gpu_bench.jsonl")
    parser.add_argument("--atoms", type=int, action="append")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--memory-atoms", type=int, default=4000)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("FAIL: no CUDA device", file=sys.stderr)
        return 1
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    if args.what == "correctness":
        correctness()
        return 1 if FAILURES else 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    run_bench(args.out, args.atoms or [108, 1000], args.repeats, args.memory_atoms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
