"""Our UMA forward+backward against fairchem-core's, same checkpoint, same system,
mode pair by mode pair, with the GEMM floor of the call on this machine.

    python benchmarks/model_vs_oracle.py --version 1.2.1 \
        [--checkpoint /tmp/uma-s-1p2p1-random.pt] [--pairs default turbo turbo-fast] \
        [--systems cu108 cu256 water192] [--threads 2 1] [--calls 5] [--profile]

The checkpoint is a random one with the sizes and format of UMA-S-1.2.1
(``--version 1.2.1``, the default) or UMA-S-1.1 (``--version 1.1``), written by
``tools/make_reference_fixtures.py --benchmark-checkpoint PATH --benchmark-version V``
(oracle venv; made on the fly when PATH does not exist). Systems: fcc Cu, 108 and
256 atoms (rattled), and 64 water molecules (192 atoms) in a periodic box at 1 g/cm³;
task omat, float32. Mode pairs (``--pairs``, :data:`PAIRS`):

* ``default``: our default preset (routed experts; activation checkpointing only
  where a step's activations exceed the memory budget) against fairchem's
  ``batch`` preset (routed experts, activation checkpointing);
* ``turbo``: our turbo preset as a CPU has it (experts merged, no activation
  checkpointing, ``torch.compile``) against fairchem's ``high-precision`` preset
  (the same, and fairchem's choice of execution backend);
* ``turbo-fast``: the same against ``high-precision`` with
  ``execution_mode="umas_fast_pytorch"`` (fairchem's block-diagonal SO(2) GEMMs).

One call = energy, forces and stress of the system, graph generation included.
The oracle side runs in the oracle venv as a subprocess (``--oracle-python``),
ours in this process, each on the same number of threads; per pair, after one
warm-up call each (the compile, for turbo), ``--calls`` timed calls alternate
between the two (so that load from other processes affects both alike). Both
processes keep freed memory for reuse (glibc's malloc thresholds raised, see
:mod:`umadrive.process_memory`), as ``umadrive serve`` does. Our unit is built
before the oracle's process starts and after the heap's free memory is given
back, so that the default mode's memory budget (half the memory free at load)
is what a lone server would find.

The GEMM floor: the floating-point operations of every matrix product of our
call (forward and backward, merged experts; ``torch.utils.flop_counter``)
divided by the rate of one large float32 matrix product on the same threads
(the median of the rates measured before the pairs and after each of our timed
calls, so that the machine's drift affects floor and calls alike): the time the
call would take if it did nothing but its matrix products at that rate. A second table gives the call's products
alone (:func:`matmul_replay_s`: each product run again at its own shapes and
strides): what they cost at the rates the matrix library reaches for them,
so that what lies above the floor splits into the products' own shortfall and
everything else.

Prints a markdown table (medians, the fairchem/umadrive ratio, the floor) and the
largest energy and force differences; writes ``benchmarks/out/model_vs_oracle.json``;
with ``--profile``, where our time goes (torch.profiler, last pair).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk, molecule

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import return_free_memory  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"

#: pair -> (our settings, fairchem's preset, fields changed in fairchem's preset)
PAIRS = {
    "default": (dict(activation_checkpointing=True, merge_mole=False, compile=False),
                "batch", {}),
    "turbo": (dict(activation_checkpointing=False, merge_mole=True, compile=True),
              "high-precision", {}),
    "turbo-fast": (dict(activation_checkpointing=False, merge_mole=True, compile=True),
                   "high-precision", {"execution_mode": "umas_fast_pytorch"}),
}
CHECKPOINTS = {"1.1": Path("/tmp/uma-s-random.pt"), "1.2.1": Path("/tmp/uma-s-1p2p1-random.pt")}
#: glibc's malloc thresholds as :func:`umadrive.process_memory.keep_freed_memory` sets them
KEEP_FREED = {"MALLOC_MMAP_THRESHOLD_": str(2**31 - 1), "MALLOC_TRIM_THRESHOLD_": str(2**64 - 1)}

ORACLE_WORKER = r"""
import json, sys, time
import numpy as np, torch
from ase import Atoms
from fairchem.core.datasets.atomic_data import AtomicData, atomicdata_list_to_batch
from dataclasses import replace
from fairchem.core.units.mlip_unit.api.inference import NAME_TO_INFERENCE_SETTING
from fairchem.core.units.mlip_unit.predict import MLIPPredictUnit

args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
atoms = Atoms(numbers=args["numbers"], positions=args["positions"], cell=args["cell"], pbc=True)
settings = replace(NAME_TO_INFERENCE_SETTING[args["preset"]], **args["fields"])
unit = MLIPPredictUnit(args["checkpoint"], device="cpu", inference_settings=settings)

def call():
    data = AtomicData.from_ase(atoms, task_name="omat", r_edges=False,
                               r_data_keys=["charge", "spin"])
    return unit.predict(atomicdata_list_to_batch([data]))

start = time.perf_counter()
out = call()
first_call_s = time.perf_counter() - start
after = unit.inference_settings
print("READY " + json.dumps({"first_call_s": first_call_s,
                             **{name: str(getattr(after, name)) for name in
                                ("merge_mole", "compile", "activation_checkpointing",
                                 "execution_mode", "nitro")}}), flush=True)
for line in sys.stdin:
    if line.strip() != "call":
        break
    start = time.perf_counter()
    out = call()
    print("TIME " + json.dumps(time.perf_counter() - start), flush=True)
print("RESULT " + json.dumps({"energy": float(out["energy"].detach()[0]),
                              "forces": out["forces"].detach().double().tolist()}), flush=True)
"""


def make_system(name: str) -> Atoms:
    """``cu108``, ``cu256``: fcc Cu (a = 3.61 Å) 3x3x3 / 4x4x4 conventional cells,
    rattled by 0.03 Å; ``water192``: 64 H2O, randomly turned, on a 4x4x4 grid in a
    cubic box of 1 g/cm³ (12.42 Å)."""
    if name in ("cu108", "cu256"):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3) if name == "cu108"
                                                            else (4, 4, 4))
        atoms.rattle(0.03, seed=0)
        return atoms
    if name == "water192":
        rng = np.random.default_rng(0)
        side = 12.42
        atoms = Atoms(cell=[side] * 3, pbc=True)
        for corner in np.ndindex(4, 4, 4):
            water = molecule("H2O")
            water.rotate(rng.uniform(0, 360), rng.normal(size=3))
            water.translate((np.array(corner) + 0.5) * side / 4)
            atoms += water
        return atoms
    raise ValueError(f"unknown system {name!r}; known: cu108, cu256, water192")


class OracleWorker:
    """fairchem's predict unit in the oracle venv, answering one timed call at a time."""

    def __init__(self, oracle_python: str, checkpoint: Path, threads: int, pair: str,
                 atoms: Atoms) -> None:
        _, preset, fields = PAIRS[pair]
        payload = json.dumps({"checkpoint": str(checkpoint), "threads": threads,
                              "preset": preset, "fields": fields,
                              "numbers": atoms.numbers.tolist(),
                              "positions": atoms.positions.tolist(),
                              "cell": atoms.cell.array.tolist()})
        self.process = subprocess.Popen([oracle_python, "-c", ORACLE_WORKER, payload],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True,
                                        env={**os.environ, **KEEP_FREED})
        self.settings_after_warm_up = json.loads(self._expect("READY"))

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

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()


def our_unit(checkpoint: Path, settings: dict, atoms: Atoms):
    from umadrive.model import InferenceSettings, System, get_predict_unit
    from umadrive.structure import Structure

    unit = get_predict_unit(checkpoint, inference_settings=InferenceSettings(
        base_precision_dtype=torch.float32, **settings))
    system = System(numbers=atoms.numbers, structure=Structure.from_atoms(atoms), task="omat",
                    charge=0, spin=0)
    return unit, system


def gemm_rate(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a (size x size) @ (size x size) float32 product, best of ``repeats``."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


_MATMULS = ("mm", "addmm", "bmm", "baddbmm")


def record_matmuls(checkpoint: Path, atoms: Atoms) -> tuple[int, list[tuple]]:
    """The matrix products of one call (forward and backward), merged experts,
    uncompiled (the same products turbo runs; the per-edge rotations as
    ``torch.bmm``, not the C loops of :mod:`umadrive.model.edge_products`): their
    floating-point operations (``torch.utils.flop_counter``) and each product as
    (operator, operands as (shape, stride, dtype) or the value itself, keyword
    arguments)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    from umadrive.model import edge_products

    recorded: list[tuple] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ in _MATMULS:
                recorded.append((func, [(a.shape, a.stride(), a.dtype)
                                        if isinstance(a, torch.Tensor) else a for a in args],
                                 kwargs or {}))
            return func(*args, **(kwargs or {}))

    unit, system = our_unit(checkpoint, dict(activation_checkpointing=False, merge_mole=True),
                            atoms)
    unit.predict([system])
    # the per-edge rotations as torch.bmm, so that they are counted and replayed too
    with edge_products.disabled(), FlopCounterMode(display=False) as counter, Record():
        unit.predict([system])
    return counter.get_total_flops(), recorded


def matmul_replay_s(recorded: list[tuple], threads: int, repeats: int = 3) -> float:
    """Seconds the ``recorded`` products (:func:`record_matmuls`) take on their
    own: run again on random operands of their shapes and strides, one after
    another, on ``threads`` threads; best of ``repeats`` runs of the whole
    sequence. What the call's products cost at the rates the matrix library
    reaches for their shapes (small or thin products run far below the rate of
    a large square one)."""
    torch.set_num_threads(threads)
    calls = [(func, [torch.empty_strided(a[0], a[1], dtype=a[2]).normal_()
                     if isinstance(a, tuple) else a for a in args], kwargs)
             for func, args, kwargs in recorded]
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        for func, args, kwargs in calls:
            func(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best


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


def run_pair(pair: str, system_name: str, threads: int, ours: dict, rates: list[float],
             args) -> dict:
    """Warm-up then ``args.calls`` alternating timed calls of both sides, each of
    ours followed by a measurement of the GEMM rate (appended to ``rates``). ``ours``
    keeps our units by settings, so that turbo compiles once per system and thread
    count for both turbo pairs."""
    torch.set_num_threads(threads)
    atoms = make_system(system_name)
    settings = PAIRS[pair][0]
    key = (system_name, threads, tuple(sorted(settings.items())))
    if key not in ours:
        # built before the oracle starts, from a trimmed heap: the memory budget of
        # the default mode is then what a lone server finds (half the free memory)
        return_free_memory()
        unit, system = our_unit(args.checkpoint, settings, atoms)
        started = time.perf_counter()
        unit.predict([system])  # warm-up (the compile, for turbo)
        ours[key] = (unit, system, time.perf_counter() - started)
    unit, system, our_first = ours[key]
    oracle = OracleWorker(args.oracle_python, args.checkpoint, threads, pair, atoms)
    try:
        oracle_times, our_times = [], []
        for _ in range(args.calls):
            oracle_times.append(oracle.timed_call())
            start = time.perf_counter()
            prediction = unit.predict([system])[0]
            our_times.append(time.perf_counter() - start)
            rates.append(gemm_rate(threads, repeats=2))
        reference = oracle.finish()
    finally:
        oracle.close()
    result = {
        "pair": pair, "system": system_name, "atoms": len(atoms), "threads": threads,
        "ours_settings": settings, "fairchem_preset": PAIRS[pair][1],
        "fairchem_fields": PAIRS[pair][2],
        "fairchem_settings_after_warm_up": oracle.settings_after_warm_up,
        "calls": args.calls, "oracle_s": oracle_times, "ours_s": our_times,
        "ours_first_call_s": our_first,
        "oracle_first_call_s": oracle.settings_after_warm_up.pop("first_call_s"),
        "ours_checkpointed_calls": unit.stats.checkpointed_calls,
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
    from umadrive.process_memory import keep_freed_memory

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--version", choices=sorted(CHECKPOINTS), default="1.2.1",
                        help="the UMA-S release the random checkpoint is shaped like")
    parser.add_argument("--checkpoint", type=Path,
                        help="default: /tmp/uma-s-random.pt (1.1) or /tmp/uma-s-1p2p1-random.pt")
    parser.add_argument("--pairs", nargs="+", choices=list(PAIRS), default=list(PAIRS))
    parser.add_argument("--systems", nargs="+", default=["cu108"],
                        choices=["cu108", "cu256", "water192"])
    parser.add_argument("--oracle-python", default=".oracle/bin/python")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    args.checkpoint = args.checkpoint or CHECKPOINTS[args.version]
    keep_freed_memory()
    ensure_checkpoint(args.checkpoint, args.oracle_python, args.version)

    results, floors, ours = [], {}, {}
    for threads in args.threads:
        for system_name in args.systems:
            rates = [gemm_rate(threads)]
            for pair in args.pairs:
                results.append(run_pair(pair, system_name, threads, ours, rates, args))
                print(json.dumps({k: v for k, v in results[-1].items() if k != "profile"}),
                      flush=True)
            ours.clear()
            flops, products = record_matmuls(args.checkpoint, make_system(system_name))
            products_alone_s = matmul_replay_s(products, threads)
            rate = statistics.median(rates)
            floors[system_name, threads] = {
                "gemm_flop_per_s": rate, "gemm_flop_per_s_range": [min(rates), max(rates)],
                "matmul_flops": flops, "floor_s": flops / rate,
                "products_alone_s": products_alone_s}
    print(f"\n{args.checkpoint.name} (UMA-S-{args.version} format), float32, "
          f"{args.calls} timed calls per side and pair after 1 warm-up\n")
    print("| system | threads | umadrive mode | fairchem-core 2.24 | fairchem median s/call | "
          "umadrive median s/call | ratio (fairchem / umadrive) | umadrive / GEMM floor | "
          "first call s, fairchem / umadrive |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        floor = floors[r["system"], r["threads"]]["floor_s"]
        fields = "".join(f" + {k}={v}" for k, v in r["fairchem_fields"].items())
        mode = "default" if r["pair"] == "default" else "turbo"
        print(f"| {r['system']} | {r['threads']} | {mode} | {r['fairchem_preset']}{fields} | "
              f"{r['oracle_median_s']:.3f} | {r['ours_median_s']:.3f} | "
              f"{r['oracle_median_s'] / r['ours_median_s']:.2f} | "
              f"{r['ours_median_s'] / floor:.2f} | "
              f"{r['oracle_first_call_s']:.1f} / {r['ours_first_call_s']:.1f} |")
    for (system_name, threads), floor in floors.items():
        low, high = floor["gemm_flop_per_s_range"]
        print(f"| {system_name} | {threads} | GEMM floor | "
              f"{floor['matmul_flops'] / 1e9:.1f} GFLOP at {floor['gemm_flop_per_s'] / 1e9:.1f} "
              f"GFLOP/s (median; {low / 1e9:.0f}–{high / 1e9:.0f}) | | {floor['floor_s']:.3f} "
              f"| | 1.00 | |")
    print("\n| system | threads | the call's products alone s (GFLOP/s) | umadrive mode "
          "(pair) | umadrive median s/call | umadrive / products alone |")
    print("|---|---:|---:|---|---:|---:|")
    for r in results:
        floor = floors[r["system"], r["threads"]]
        alone = floor["products_alone_s"]
        print(f"| {r['system']} | {r['threads']} | {alone:.3f} "
              f"({floor['matmul_flops'] / alone / 1e9:.1f}) | {r['pair']} | "
              f"{r['ours_median_s']:.3f} | {r['ours_median_s'] / alone:.2f} |")
    for r in results:
        print(f"agreement ({r['system']}, {r['threads']} threads, {r['pair']}): |dE|/atom = "
              f"{r['energy_difference_per_atom']:.2e} eV, max |dF| = "
              f"{r['max_force_difference']:.2e} eV/Å; fairchem after warm-up: "
              f"{r['fairchem_settings_after_warm_up']}")
    OUT.mkdir(exist_ok=True)
    (OUT / "model_vs_oracle.json").write_text(json.dumps(
        {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
         "version": args.version, "checkpoint": str(args.checkpoint),
         "floors": [{"system": s, "threads": t, **f} for (s, t), f in floors.items()],
         "results": [{k: v for k, v in r.items() if k != "profile"} for r in results]},
        indent=2))
    if args.profile:
        print(f"\numadrive, one call ({results[-1]['pair']}), by self CPU time:\n")
        print(results[-1]["profile"])


if __name__ == "__main__":
    main()
