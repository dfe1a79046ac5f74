"""``umadrive bench``: inference settings measured against the default mode.

For each checkpoint and system size (ordered fcc Cu3Au, L1_2, a = 3.75 Å) it
times ``predict`` in the default mode, turbo, and default with one setting
changed, all in this process: the predict units share one copy of the weights
and take turns within each round, on the same MD-like rattled positions, so the
modes see the same machine load. Then, for ``--memory-atoms``, the peak memory of
one call with and without activation checkpointing, each in a fresh process (with
checkpointing, the memory budget is a quarter of the step's estimated need, so
that the edges run in chunks: see :mod:`umadrive.model.activation_memory`).

Output: one JSON object per line (``{"name": ..., "median_s": ..., "ratio": ...}``,
ratio = time / default time, below 1 is faster) and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from umadrive.process_memory import keep_freed_memory
from umadrive.progress import Progress

#: Modes: name -> changes to the default settings (None: the turbo preset).
MODES: dict[str, dict | None] = {
    "default": {},
    "turbo": None,
    "activation_checkpointing=False": {"activation_checkpointing": False},
    "merge_mole=True": {"merge_mole": True},
    "compile=True": {"compile": True},
    "tf32=True": {"tf32": True},
    "wigner_cuda=True": {"wigner_cuda": True},
    "internal_graph_gen_version=1": {"internal_graph_gen_version": 1},
    "external_graph_gen=True (vesin)": {"external_graph_gen": True},
}
RATTLE = 0.01  # Å, per call: positions as an MD step would change them
#: Chunks of the memory measurement with activation checkpointing (budget = need / CHUNKS).
CHUNKS = 4


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", action="append", required=True, metavar="PATH_OR_NAME",
                        help="model to benchmark (repeat for several)")
    parser.add_argument("--atoms", type=int, action="append", metavar="N",
                        help="system sizes, multiples of 4 that make an a x a x b cell "
                             "(default: 108 and 1000)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated subset of: {', '.join(MODES)}")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per mode (median)")
    parser.add_argument("--memory-atoms", type=int, default=0, metavar="N",
                        help="also measure peak memory with/without activation checkpointing "
                             "at N atoms (0: skip)")
    parser.add_argument("--memory-checkpoint", metavar="PATH_OR_NAME",
                        help="model for the memory measurement (default: the first --checkpoint)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads for this process (0: torch's default)")
    parser.add_argument("--out", type=Path, help="also write the JSON lines to this file")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)


def cu3au(atoms: int):
    """Ordered fcc Cu3Au (L1_2) of ``atoms`` atoms: n x n x m cubic cells, n as large as fits."""
    from umadrive.crystals import cu3au as cu3au_cells

    if atoms % 4:
        raise ValueError(f"--atoms {atoms} is not a multiple of 4 (4 atoms per fcc cell)")
    cells = atoms // 4
    n = max(k for k in range(1, round(cells ** (1 / 3)) + 2) if cells % (k * k) == 0)
    return cu3au_cells((n, n, cells // (n * n)))


def _system(crystal, rng):
    import numpy as np

    from umadrive.model import System
    from umadrive.structure import Structure

    positions = crystal.positions + rng.normal(scale=RATTLE, size=crystal.positions.shape)
    return System(numbers=crystal.numbers.copy(),
                  structure=Structure(positions=positions, cell=np.array(crystal.cell),
                                      pbc=crystal.pbc.copy()),
                  task="omat", charge=0, spin=0)


def _settings(mode: str):
    from umadrive.model import InferenceSettings

    changes = MODES[mode]
    return InferenceSettings.preset("turbo") if changes is None else InferenceSettings(**changes)


def _units(model, device, modes):
    """One predict unit per mode; their models share the parameter storage."""
    from umadrive.model.predictor import PredictUnit

    return {mode: PredictUnit(model, device=device, settings=_settings(mode)) for mode in modes}


def time_modes(checkpoint: str, atoms: int, modes: list[str], repeats: int, device: str,
               progress: Progress | None = None) -> list[dict]:
    """Median seconds per predict() call of each mode (see the module docstring);
    ``progress`` counts the calls (a warm-up and ``repeats`` timed calls per mode)."""
    import numpy as np
    import torch

    from umadrive.model.checkpoint import load_checkpoint
    from umadrive.model.names import resolve_model
    from umadrive.model.uma import UMA

    device = torch.device(device)
    model = UMA.from_checkpoint(load_checkpoint(resolve_model(checkpoint)), device=device)
    units = _units(model, device, modes)
    crystal = cu3au(atoms)
    rng = np.random.default_rng(7)
    warmup = {}
    calls = 0
    for mode, unit in units.items():
        if progress is not None:
            progress.update_to(calls, f"warm-up {mode}")
        unit.predict([_system(crystal, rng)])
        warmup[mode] = unit.stats.warmup_s
        calls += 1
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for round_index in range(repeats):
        system = _system(crystal, rng)
        order = modes[round_index % len(modes):] + modes[:round_index % len(modes)]
        for mode in order:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            units[mode].predict([system])
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[mode].append(time.perf_counter() - started)
            calls += 1
            if progress is not None:
                progress.update_to(calls, f"round {round_index + 1}/{repeats}")
    base = float(np.median(times[modes[0]]))
    results = []
    for mode in modes:
        median = float(np.median(times[mode]))
        active = units[mode].active_settings()
        inactive = [name for name, value in (MODES[mode] or {}).items()
                    if isinstance(value, bool) and value and not active[name]]
        results.append({
            "name": f"settings/{Path(checkpoint).stem}/{atoms}/{mode}",
            "checkpoint": str(checkpoint), "atoms": atoms, "mode": mode,
            "median_s": median, "ratio": median / base, "speedup": base / median,
            "warmup_s": warmup[mode], "repeats": repeats, "device": str(device),
            "inactive": inactive})
    return results


def _vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_probe(spec: dict) -> dict:
    """Peak memory of the second predict() call, for one setting (runs in its own process)."""
    import numpy as np
    import torch

    from umadrive.model import InferenceSettings, activation_memory, get_predict_unit

    device = torch.device(spec["device"])
    crystal = cu3au(spec["atoms"])
    rng = np.random.default_rng(7)
    system = _system(crystal, rng)
    unit = get_predict_unit(spec["checkpoint"], device,
                            InferenceSettings(activation_checkpointing=False))
    edges = int(unit.graph(unit.batch([system])).edge_index.shape[1])
    budget = None
    if spec["activation_checkpointing"]:
        budget = edges * activation_memory.bytes_per_edge(unit.model.backbone.config,
                                                          unit.dtype) // CHUNKS
        del unit
        unit = get_predict_unit(spec["checkpoint"], device, InferenceSettings(),
                                memory_budget=budget)
    unit.predict([_system(crystal, rng)])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        unit.predict([system])
        peak = torch.cuda.max_memory_allocated(device)
        method = "torch.cuda.max_memory_allocated"
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
        before = _vm_kib("VmRSS") * 1024
        unit.predict([system])
        peak = _vm_kib("VmHWM") * 1024
        method = "VmHWM - VmRSS (Linux)"
    return {"peak_extra_mib": (peak - before) / 2 ** 20, "edges": edges, "method": method,
            "memory_budget": budget, "chunk": unit.checkpoint_chunk(edges)}


def measure_memory(checkpoint: str, atoms: int, device: str, threads: int) -> list[dict]:
    results = []
    for checkpointing in (True, False):
        spec = {"checkpoint": str(checkpoint), "atoms": atoms, "device": device,
                "activation_checkpointing": checkpointing}
        command = [sys.executable, "-m", "umadrive", "bench", "--checkpoint", str(checkpoint),
                   "--threads", str(threads), "--memory-probe", json.dumps(spec)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(f"memory probe failed ({' '.join(command)}):\n{done.stderr[-2000:]}")
        probe = json.loads(done.stdout.strip().splitlines()[-1])
        results.append({"name": f"memory/{Path(checkpoint).stem}/{atoms}/"
                                f"activation_checkpointing={checkpointing}",
                        "checkpoint": str(checkpoint), "atoms": atoms, "device": device,
                        "activation_checkpointing": checkpointing, **probe})
    with_, without = results
    with_["ratio"] = with_["peak_extra_mib"] / without["peak_extra_mib"]
    without["ratio"] = 1.0
    return results


def table(results: list[dict]) -> str:
    lines = []
    timed = [r for r in results if r["name"].startswith("settings/")]
    if timed:
        lines += ["| model | atoms | mode | median s/call | time / default | speedup | "
                  "first call s |", "|---|---:|---|---:|---:|---:|---:|"]
        for r in timed:
            mode = r["mode"] + (f" (inactive on {r['device']})" if r["inactive"] else "")
            lines.append(f"| {Path(r['checkpoint']).stem} | {r['atoms']} | {mode} | "
                         f"{r['median_s']:.3f} | {r['ratio']:.3f} | {r['speedup']:.2f}x | "
                         f"{r['warmup_s']:.1f} |")
    memory = [r for r in results if r["name"].startswith("memory/")]
    if memory:
        lines += ["", "| model | atoms | edges | activation_checkpointing | chunk (edges) | "
                      "peak extra MiB | ratio |", "|---|---:|---:|---|---:|---:|---:|"]
        for r in memory:
            lines.append(f"| {Path(r['checkpoint']).stem} | {r['atoms']} | {r['edges']} | "
                         f"{r['activation_checkpointing']} | {r['chunk'] or '–'} | "
                         f"{r['peak_extra_mib']:.0f} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    # This command's own process only: inductor compiles in this process rather than in
    # a pool of workers that would keep the CPU busy while other modes are timed.
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:  # malloc as it comes: the peak of one step is measured
        print(json.dumps(memory_probe(json.loads(args.memory_probe))))
        return 0
    keep_freed_memory()
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown or not modes or modes[0] != "default":
        print(f"umadrive bench: --modes must start with 'default' and name only known modes; "
              f"unknown: {unknown}; known: {', '.join(MODES)}", file=sys.stderr)
        return 2
    if args.repeats < 1:
        print(f"umadrive bench: --repeats must be >= 1, got {args.repeats}", file=sys.stderr)
        return 2
    out = args.out.open("w") if args.out else None
    results = []

    def emit(batch: list[dict]) -> None:
        for result in batch:
            line = json.dumps(result)
            print(line, flush=True)
            if out:
                out.write(line + "\n")
                out.flush()
        results.extend(batch)

    for checkpoint in args.checkpoint:
        for atoms in args.atoms or [108, 1000]:
            # on stderr: stdout stays JSON lines and the table
            with Progress(len(modes) * (1 + args.repeats), f"{checkpoint}, {atoms} atoms",
                          unit="call", file=sys.stderr) as progress:
                results_now = time_modes(checkpoint, atoms, modes, args.repeats, args.device,
                                         progress)
            emit(results_now)
    if args.memory_atoms:
        emit(measure_memory(args.memory_checkpoint or args.checkpoint[0], args.memory_atoms,
                            args.device, args.threads))
    print()
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"pid {os.getpid()}")
    print(table(results))
    if out:
        out.close()
    return 0
