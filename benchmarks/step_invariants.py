"""The per-step work outside the model at 32 beads × 1,000 atoms of Cu3Au: the
driver's request checks, ``PredictUnit.batch`` (input checks, tensors on the
device) and the merge key of every bead (``merge_mole``), with the bundled demo
model. No forward pass, so it runs in seconds and can be run against any
checkout (``PYTHONPATH=<checkout>``) to compare versions. Medians of
``--steps`` steps, each with fresh positions; writes
benchmarks/out/step_invariants.json (``--label`` names the entry).

    python benchmarks/step_invariants.py [--beads 32] [--steps 50] [--label after]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import OUT, ROOT, cu3au, perturbed  # noqa: E402
from umadrive.driver.backends.uma import UmaBackend, UmaOptions  # noqa: E402
from umadrive.driver.requests import check_structure  # noqa: E402
from umadrive.model.merge import ExpertMerger  # noqa: E402

DEMO_MODEL = ROOT / "umadrive" / "data" / "demo" / "uma-demo.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beads", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--label", default="current")
    args = parser.parse_args()
    torch.set_num_threads(1)
    template = cu3au((5, 5, 10))
    backend = UmaBackend.load(str(DEMO_MODEL), template, UmaOptions(mode="default"))
    unit = backend.unit
    merger = ExpertMerger(unit.model)
    parts = {"request_checks": [], "batch": [], "merge_keys": []}
    for step in range(args.steps + 1):
        beads = perturbed(template, args.beads, seed=step)
        start = time.perf_counter()
        checked = [check_structure(s, template) for s in beads]
        checks_done = time.perf_counter()
        systems = [backend._system(s) for s in checked]
        unit.batch(systems)
        batched = time.perf_counter()
        [merger.key_of(s.numbers, s.charge, s.spin, s.task) for s in systems]
        keyed = time.perf_counter()
        if step:
            parts["request_checks"].append(checks_done - start)
            parts["batch"].append(batched - checks_done)
            parts["merge_keys"].append(keyed - batched)
    medians = {name: 1e3 * statistics.median(values) for name, values in parts.items()}
    medians["total"] = sum(medians.values())
    print(args.label, {name: round(value, 2) for name, value in medians.items()}, "ms")
    OUT.mkdir(exist_ok=True)
    path = OUT / "step_invariants.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results[args.label] = {"beads": args.beads, "atoms": len(template), "steps": args.steps,
                           "median_ms": medians}
    path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
