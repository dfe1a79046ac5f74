"""The driver's own share of a step: 32 beads of 1,000-atom Cu3Au (one path-integral
step) through the UMA backend with the bundled demo model, default mode.

One step is what ``umadrive serve`` does between receiving the positions and
sending the answers: the request checks against the template
(:func:`~umadrive.driver.requests.check_structure`) and one ``Backend.compute``
call. That call is split into the radius graph, the model's forward/backward and
the rest (input checks, merge key, tensors to and from the device). The driver's
share is everything but the forward/backward and the graph. Medians over the
steps; prints a markdown table and writes benchmarks/out/driver_share.json.

    python benchmarks/driver_share.py [--beads 32] [--steps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import ROOT, cu3au, perturbed, write_results  # noqa: E402
from umadrive.driver.backends.uma import UmaBackend, UmaOptions  # noqa: E402
from umadrive.driver.requests import check_structure  # noqa: E402

DEMO_MODEL = ROOT / "umadrive" / "data" / "demo" / "uma-demo.pt"


class Clock:
    """Wraps a callable and sums the seconds spent in it."""

    def __init__(self, call) -> None:
        self.call = call
        self.seconds = 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.call(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beads", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", default="5,5,10", help="Cu3Au cells (5,5,10: 1,000 atoms)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    template = cu3au(tuple(int(n) for n in args.repeat.split(",")))
    backend = UmaBackend.load(str(DEMO_MODEL), template, UmaOptions(mode="default"))
    unit = backend.unit
    forward = unit.model.forward = Clock(unit.model.forward)
    graph = unit.graph = Clock(unit.graph)
    rows = {"checks": [], "graph": [], "forward_backward": [], "rest_of_compute": [],
            "step": []}
    for step in range(args.steps + 1):
        beads = perturbed(template, args.beads, seed=step)
        forward.seconds = graph.seconds = 0.0
        start = time.perf_counter()
        checked = [check_structure(s, template) for s in beads]
        after_checks = time.perf_counter()
        backend.compute(checked)
        end = time.perf_counter()
        if step == 0:
            continue  # the first call merges the experts and warms the allocator
        rows["checks"].append(after_checks - start)
        rows["graph"].append(graph.seconds)
        rows["forward_backward"].append(forward.seconds)
        rows["rest_of_compute"].append(end - after_checks - graph.seconds - forward.seconds)
        rows["step"].append(end - start)
    medians = {name: statistics.median(values) for name, values in rows.items()}
    own = medians["checks"] + medians["rest_of_compute"]
    share = own / medians["step"]
    atoms = len(template)
    table = [f"{args.beads} beads × {atoms} atoms, demo model, default mode, "
             f"{args.threads} threads, median of {args.steps} steps",
             "", "| part of the step | ms | share |", "|---|---:|---:|"]
    for name, value in medians.items():
        table.append(f"| {name.replace('_', ' ')} | {1e3 * value:.1f} | "
                     f"{100 * value / medians['step']:.2f} % |")
    table.append(f"| driver's own (checks + rest of compute) | {1e3 * own:.1f} | "
                 f"{100 * share:.2f} % |")
    write_results("driver_share", table, {
        "beads": args.beads, "atoms": atoms, "threads": args.threads, "steps": args.steps,
        "model": DEMO_MODEL.name, "mode": "default", "median_s": medians,
        "all_s": rows, "driver_own_s": own, "driver_share": share})


if __name__ == "__main__":
    main()
