"""Radius-graph generation time: umadrive's versions 1 and 2, the vesin
generator when vesin is installed, and fairchem's generate_graph when
fairchem-core is importable (run with the oracle venv's Python for that one).

    PYTHONPATH=. python benchmarks/bench_graph.py [--threads 2] [--repeats 5] [--json out.json]

Systems: rattled fcc Cu supercells, cutoff 6 Å, max_neighbors 300 (UMA's
fine-tuning setting). Prints a markdown table of medians and ratios to
umadrive v2; each generator runs on the same tensors in this one process.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from collections.abc import Callable

import torch
from ase.build import bulk

from umadrive.model.graph import radius_graph, vesin_graph

CUTOFF = 6.0
MAX_NEIGHBORS = 300
SIZES = {108: (3, 3, 3), 1000: (5, 5, 10), 10192: (14, 14, 13)}
V1_LIMIT = 2000  # all-pairs version 1 is quadratic; skip it for bigger systems


def fcc_copper(repeat: tuple[int, int, int]):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * repeat
    atoms.rattle(0.05, seed=1)
    atoms.wrap()  # fairchem's generator expects wrapped positions
    return (
        torch.tensor(atoms.positions),
        torch.tensor(atoms.cell.array).unsqueeze(0),
        torch.tensor(atoms.pbc).unsqueeze(0),
        torch.zeros(len(atoms), dtype=torch.long),
    )


def fairchem_generator() -> Callable | None:
    try:
        from fairchem.core.graph.compute import generate_graph
    except ImportError:
        return None

    class Batch(dict):
        def __getattr__(self, key):
            try:
                return self[key]
            except KeyError:
                raise AttributeError(key) from None

    def run(positions, cell, pbc, batch, *, cutoff, max_neighbors):
        data = Batch(pos=positions, cell=cell, pbc=pbc, batch=batch,
                     natoms=torch.tensor([len(positions)]))
        return generate_graph(data, cutoff=cutoff, max_neighbors=max_neighbors,
                              enforce_max_neighbors_strictly=False, radius_pbc_version=2, pbc=pbc)

    return run


def median_seconds(generators: dict[str, Callable], arguments: tuple, repeats: int) -> dict[str, float]:
    """Median time of each generator; the generators take turns within each
    repeat so that load from other processes hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in generators}
    for function in generators.values():  # warm-up
        function(*arguments, cutoff=CUTOFF, max_neighbors=MAX_NEIGHBORS)
    for _ in range(repeats):
        for name, function in generators.items():
            start = time.perf_counter()
            function(*arguments, cutoff=CUTOFF, max_neighbors=MAX_NEIGHBORS)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    generators: dict[str, Callable] = {
        "umadrive v2": lambda *a, **k: radius_graph(*a, version=2, **k),
        "umadrive v1": lambda *a, **k: radius_graph(*a, version=1, **k),
    }
    if importlib.util.find_spec("vesin") is not None:
        generators["vesin"] = vesin_graph
    fairchem = fairchem_generator()
    if fairchem is not None:
        generators["fairchem v2"] = fairchem

    results = []
    for n_atoms, repeat in SIZES.items():
        selected = {name: function for name, function in generators.items()
                    if not (name == "umadrive v1" and n_atoms > V1_LIMIT)}
        medians = median_seconds(selected, fcc_copper(repeat), args.repeats)
        baseline = medians["umadrive v2"]
        results.extend(
            {"name": f"graph {name}", "atoms": n_atoms, "median_s": seconds,
             "ratio": seconds / baseline, "threads": args.threads}
            for name, seconds in medians.items()
        )

    print("| atoms | generator | median (ms) | time / umadrive v2 |\n|---|---|---|---|")
    for row in results:
        print(f"| {row['atoms']} | {row['name'].removeprefix('graph ')} | "
              f"{row['median_s'] * 1e3:.1f} | {row['ratio']:.2f} |")
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(results, stream, indent=1)


if __name__ == "__main__":
    main()
