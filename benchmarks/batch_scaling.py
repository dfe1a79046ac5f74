"""Per-structure cost of a batch: 1, 4, 16 and 32 rattled 108-atom Cu3Au
structures per ``predict`` call, the bundled demo model (or ``--checkpoint``),
energy + forces + stress.

Each round calls every batch size in turn, so load from other processes hits
them alike; each timed call follows an untimed one of the same size, as in an MD
run, where every step has the same size; medians over the rounds. ``--compare-routing`` also runs every
size with the routed experts of the systems of a batch mixed one system at a
time (the code before ``ExpertRouting.grouped``), alternating with the current
path. The process keeps freed memory for reuse as ``umadrive serve`` does
(:func:`umadrive.process_memory.keep_freed_memory`); ``--plain-malloc`` leaves
glibc's malloc as it comes (the large blocks of a batch are then returned to the
kernel after every call and faulted in again at the next). Each mode's unit is
built from a trimmed heap (what an earlier mode freed does not count against its
memory budget). A batch whose activations exceed the memory budget runs in
groups of whole systems (:func:`umadrive.model.activation_memory.system_groups`);
the table gives, per mode, the calls (untimed ones included) that were split and
the evaluations recomputed in chunks. Prints a markdown table and writes
benchmarks/out/batch_scaling.json.

    python benchmarks/batch_scaling.py [--modes default,turbo] [--sizes 1,4,16,32]
        [--rounds 3] [--threads 2] [--compare-routing] [--plain-malloc]
        [--checkpoint PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import (ROOT, cu3au, perturbed, return_free_memory,  # noqa: E402
                               write_results)
from umadrive.model import mole  # noqa: E402
from umadrive.model.predictor import System, get_predict_unit  # noqa: E402
from umadrive.model.settings import InferenceSettings  # noqa: E402
from umadrive.process_memory import keep_freed_memory  # noqa: E402

DEMO_MODEL = ROOT / "umadrive" / "data" / "demo" / "uma-demo.pt"
GROUPED = mole.ExpertRouting.grouped


def per_system(coefficients: torch.Tensor, counts: tuple[int, ...]) -> mole.ExpertRouting:
    """One mixture per system, as before ``ExpertRouting.grouped``."""
    return mole.ExpertRouting(coefficients, counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="default")
    parser.add_argument("--sizes", default="1,4,16,32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compare-routing", action="store_true")
    parser.add_argument("--plain-malloc", action="store_true")
    parser.add_argument("--checkpoint", type=Path, default=DEMO_MODEL)
    args = parser.parse_args()
    malloc = "plain" if args.plain_malloc else ("kept" if keep_freed_memory() else "plain")
    torch.set_num_threads(args.threads)
    template = cu3au((3, 3, 3))
    sizes = [int(n) for n in args.sizes.split(",")]
    variants = ["grouped", "per-system"] if args.compare_routing else ["grouped"]
    results, table = {}, [
        f"108-atom Cu3Au, {args.checkpoint.name}, {args.threads} threads, median of "
        f"{args.rounds} rounds (ms per structure)", "",
        "| mode | routing | malloc | " + " | ".join(f"{n} per call" for n in sizes)
        + " | split calls | chunked evaluations |",
        "|---|---|---|" + "---:|" * (len(sizes) + 2)]
    unit = None
    for mode in args.modes.split(","):
        del unit
        return_free_memory()
        unit = get_predict_unit(str(args.checkpoint), "cpu", InferenceSettings.preset(mode))
        task = unit.datasets[0]
        def systems(count: int, seed: int) -> list[System]:
            return [System(template.numbers, s, task, 0, 0)
                    for s in perturbed(template, count, seed)]
        unit.predict(systems(2, 0))  # merges / compiles, warms the allocator
        times = {(variant, n): [] for variant in variants for n in sizes}
        split_before = unit.stats.split_calls
        chunked_before = unit.stats.checkpointed_calls
        for round_ in range(args.rounds):
            for n in sizes:
                for variant in variants:
                    mole.ExpertRouting.grouped = GROUPED if variant == "grouped" else per_system
                    # as in MD, the call before has the same size (its memory is reused)
                    unit.predict(systems(n, 1000 * round_ + n + 500))
                    batch = systems(n, 1000 * round_ + n)
                    start = time.perf_counter()
                    unit.predict(batch)
                    times[variant, n].append((time.perf_counter() - start) / n)
        mole.ExpertRouting.grouped = GROUPED
        # untimed calls included: they have the sizes of the timed ones
        split = unit.stats.split_calls - split_before
        chunked = unit.stats.checkpointed_calls - chunked_before
        for variant in variants:
            medians = [statistics.median(times[variant, n]) for n in sizes]
            results[f"{mode}/{variant}/{malloc}"] = {
                "ms_per_structure": dict(zip(sizes, (1e3 * m for m in medians))),
                "all_s": {n: times[variant, n] for n in sizes},
                "split_calls": split, "chunked_evaluations": chunked}
            table.append(f"| {mode} | {variant} | {malloc} | "
                         + " | ".join(f"{1e3 * m:.0f}" for m in medians)
                         + f" | {split} | {chunked} |")
    write_results("batch_scaling", table, {"atoms": len(template), "threads": args.threads,
                                           "rounds": args.rounds, "model": args.checkpoint.name,
                                           "results": results})


if __name__ == "__main__":
    main()
