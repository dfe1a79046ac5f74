"""Activation memory of a forces step: the estimate
(``umadrive.model.activation_memory.bytes_per_edge``) against the measured peak.

    python benchmarks/activation_memory.py [--checkpoint PATH ...] [--repeat 8] [--task omat]

For each checkpoint, a fresh process (one thread, no activation checkpointing)
evaluates rattled L1_2 Cu3Au of ``--repeat``³ conventional cells twice; the
second step's resident-set peak above the level before it (``VmHWM`` after
resetting it, Linux) is the measured activation memory. Prints one JSON line per
checkpoint and a markdown table (bytes per edge, measured and estimated, and
their ratio), writes ``benchmarks/out/activation_memory.json``.
``tests/model/test_activation_memory.py`` runs the child to check that the
estimate bounds the measurement.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import ROOT, return_free_memory, subprocess_env, write_results  # noqa: E402

DEFAULTS = [ROOT / "umadrive" / "data" / "demo" / "uma-demo.pt",
            ROOT / "tests" / "data" / "uma_s1p1.pt"]


def _resident(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def child(checkpoint: str, repeat: int, task: str | None) -> dict:
    """Runs in the measured process."""
    import numpy as np
    import torch

    from umadrive import crystals
    from umadrive.model import InferenceSettings, System, get_predict_unit
    from umadrive.model.activation_memory import bytes_per_edge
    from umadrive.structure import Structure

    unit = get_predict_unit(checkpoint, inference_settings=InferenceSettings(
        activation_checkpointing=False))
    atoms = crystals.cu3au((repeat, repeat, repeat))
    rng = np.random.default_rng(0)

    def system() -> System:
        positions = atoms.positions + rng.normal(0, 0.02, atoms.positions.shape)
        return System(atoms.numbers, Structure(positions=positions, cell=atoms.cell.array,
                                               pbc=atoms.pbc), task or unit.datasets[0], 0, 0)

    unit.predict([system()])
    step = system()
    return_free_memory()  # the level a step is measured from: live memory only
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM
    before = _resident("VmRSS")
    unit.predict([step])
    measured = _resident("VmHWM") - before
    edges = int(unit.graph(unit.batch([step])).edge_index.shape[1])
    estimate = bytes_per_edge(unit.model.backbone.config, torch.float32)
    return {"checkpoint": Path(checkpoint).name, "atoms": len(atoms), "edges": edges,
            "measured_bytes": measured, "estimate_bytes": edges * estimate,
            "measured_per_edge": measured / edges, "estimate_per_edge": estimate}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        checkpoint, repeat, task = sys.argv[2:5]
        print(json.dumps(child(checkpoint, int(repeat), task or None)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", type=Path)
    parser.add_argument("--repeat", type=int, default=8)
    parser.add_argument("--task")
    args = parser.parse_args()
    results = []
    for checkpoint in args.checkpoint or DEFAULTS:
        done = subprocess.run([sys.executable, __file__, "--child", str(checkpoint),
                               str(args.repeat), args.task or ""], capture_output=True,
                              text=True, env=subprocess_env(), check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    table = ["| checkpoint | atoms | edges | measured KB/edge | estimate KB/edge | "
             "estimate / measured |", "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        table.append(f"| {r['checkpoint']} | {r['atoms']} | {r['edges']} | "
                     f"{r['measured_per_edge'] / 1e3:.1f} | {r['estimate_per_edge'] / 1e3:.1f} | "
                     f"{r['estimate_bytes'] / r['measured_bytes']:.2f} |")
    write_results("activation_memory", table, {"repeat": args.repeat, "results": results})


if __name__ == "__main__":
    main()
