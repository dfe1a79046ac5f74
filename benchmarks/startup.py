"""Start-up of a driver: cold and warm start, time to first answer, time to full speed.

    python benchmarks/startup.py [--checkpoint umadrive/data/demo/uma-demo.pt] [--steps-after 5]

Each row is a fresh process doing what ``umadrive serve`` does before and after
the engine connects: load the model (``UmaBackend.load``), start the background
compile (turbo; kernels from and into the cache under ``$UMADRIVE_CACHE``),
then answer MD-like steps (108-atom Cu₃Au, positions rattled each step) one
after another as an engine would, until ``--steps-after`` steps after the
switch to compiled answers (default mode: that many steps). Times are wall
seconds from the process launch (imports included); one torch thread, or
``--threads N`` (both sides).

* cold: an empty ``$UMADRIVE_CACHE`` (umadrive's kernel entries and, as
  ``umadrive serve`` sets it, inductor's folder): everything is compiled.
* warm: the cache the cold run filled (the precompiled model is loaded). A
  cold run stopped by ``--max-steps`` before its compile finished (with all
  cores answering, the nice-19 compile gets almost none) caches nothing; the
  cache is then filled by ``umadrive compile`` first (its own row).

``--checkpoint`` takes any UMA checkpoint (path or name), e.g. a UMA-S-sized
one. ``--oracle-python`` adds the anchor: fairchem-core's ``high-precision``
preset (merged, compiled; run in the oracle venv) on the same checkpoint and
structure in a fresh process, on the same threads: when it has loaded, its first answer
(the compile) and its second. Prints a markdown table (with the load average before and after the runs)
and writes ``benchmarks/out/startup.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, cu3au, subprocess_env, perturbed, write_results  # noqa: E402

DEMO = ROOT / "umadrive" / "data" / "demo" / "uma-demo.pt"


def child(model: str, mode: str, steps_after: int, max_steps: int, launched: float,
          task: str | None) -> None:
    """Runs in the measured process; prints one JSON line per event."""
    def event(name: str, **fields) -> None:
        print(json.dumps({"event": name, "t": time.time() - launched, **fields}), flush=True)

    from umadrive.commands.compile import keep_inductor_kernels
    from umadrive.driver.backends import UmaOptions
    from umadrive.driver.backends.uma import UmaBackend
    from umadrive.process_memory import keep_freed_memory

    keep_inductor_kernels()
    keep_freed_memory()  # as umadrive serve does

    atoms = cu3au((3, 3, 3))
    backend = UmaBackend.load(model, atoms, UmaOptions(mode=mode, task=task))
    event("loaded")
    warm_up = backend.warm_up(background=True) if backend.compiles else None
    compiled_steps = 0
    for step, structure in enumerate(perturbed(atoms, max_steps)):
        compiled = warm_up is not None and warm_up.done  # answered compiled from this call on
        start = time.perf_counter()
        backend.compute([structure])
        event("answer", step=step, seconds=time.perf_counter() - start,
              compiled=compiled or warm_up is None)
        compiled_steps += compiled or warm_up is None
        if compiled_steps >= steps_after:
            break
    if warm_up is not None and not warm_up.done:
        backend.stop_compiling()
        event("compile", seconds=None, cache_hit=None, error="not done within --max-steps")
    elif warm_up is not None:
        event("compile", seconds=warm_up.seconds, cache_hit=warm_up.cache_hit,
              error=None if warm_up.error is None else str(warm_up.error))


FAIRCHEM_CHILD = r"""
import json, sys, time
launched = float(sys.argv[3])
import torch
from ase.io import read
from fairchem.core.datasets.atomic_data import AtomicData, atomicdata_list_to_batch
from fairchem.core.units.mlip_unit.api.inference import NAME_TO_INFERENCE_SETTING
from fairchem.core.units.mlip_unit.predict import MLIPPredictUnit
torch.set_num_threads(int(sys.argv[5]))
unit = MLIPPredictUnit(sys.argv[1], device="cpu",
                       inference_settings=NAME_TO_INFERENCE_SETTING["high-precision"])
loaded = time.time() - launched
atoms = read(sys.argv[2])
times = []
for _ in range(2):
    start = time.perf_counter()
    data = AtomicData.from_ase(atoms, task_name=sys.argv[4], r_edges=False,
                               r_data_keys=["charge", "spin"])
    unit.predict(atomicdata_list_to_batch([data]))
    times.append((time.time() - launched, time.perf_counter() - start))
print(json.dumps({"loaded": loaded, "answers": times}))
"""


def measure_fairchem(oracle_python: str, model: str, folder: Path, task: str,
                     threads: int) -> dict:
    """fairchem's high-precision preset: load, first answer (its compile), second."""
    structure = folder / "cu3au.extxyz"
    cu3au((3, 3, 3)).write(structure)
    launched = time.time()
    out = subprocess.run([oracle_python, "-c", FAIRCHEM_CHILD, model, str(structure),
                          repr(launched), task, str(threads)], env=subprocess_env(threads),
                         capture_output=True, text=True, check=True)
    record = json.loads(out.stdout.strip().splitlines()[-1])
    (first_t, first_s), (second_t, second_s) = record["answers"]
    return {"mode": "fairchem high-precision", "start": "own caches", "loaded_s": record["loaded"],
            "first_answer_s": first_t, "first_answer_after_load_s": first_t - record["loaded"],
            "full_speed_s": second_t - second_s,
            "full_speed_after_load_s": second_t - second_s - record["loaded"],
            "uncompiled_step_s": None, "full_speed_step_s": second_s, "uncompiled_steps": 0,
            "compile_s": first_s, "cache_hit": None}


def cache_env(cache: Path, threads: int) -> dict:
    """A measured process's environment: ``threads`` threads, umadrive's cache (and,
    as ``umadrive serve`` sets it, inductor's) in ``cache``."""
    env = {key: value for key, value in subprocess_env(threads).items()
           if key != "TORCHINDUCTOR_CACHE_DIR"}
    env["UMADRIVE_CACHE"] = str(cache)
    return env


def measure(model: str, mode: str, steps_after: int, max_steps: int, cache: Path,
            task: str | None, threads: int) -> dict:
    env = cache_env(cache, threads)
    launched = time.time()
    out = subprocess.run([sys.executable, __file__, "--child", model, mode, str(steps_after),
                          str(max_steps), repr(launched), task or ""], env=env,
                         capture_output=True, text=True, check=True)
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    answers = [e for e in events if e["event"] == "answer"]
    loaded = next(e["t"] for e in events if e["event"] == "loaded")
    full = next((e for e in answers if e["compiled"]), None)
    compile_event = next((e for e in events if e["event"] == "compile"), None)
    uncompiled = [e["seconds"] for e in answers if not e["compiled"]]
    return {
        "loaded_s": loaded,
        "first_answer_s": answers[0]["t"],
        "first_answer_after_load_s": answers[0]["t"] - loaded,
        "full_speed_s": full and full["t"] - full["seconds"],
        "full_speed_after_load_s": full and full["t"] - full["seconds"] - loaded,
        "uncompiled_step_s": statistics.median(uncompiled) if uncompiled else None,
        "full_speed_step_s": full and statistics.median(e["seconds"] for e in answers
                                                        if e["compiled"]),
        "uncompiled_steps": len(uncompiled),
        "compile_s": compile_event and compile_event["seconds"],
        "cache_hit": compile_event and compile_event["cache_hit"],
    }


def compile_ahead(model: str, cache: Path, task: str | None, threads: int) -> dict:
    """``umadrive compile`` into ``cache`` (what a cluster user runs before a job)."""
    structure = cache / "cu3au.extxyz"
    cu3au((3, 3, 3)).write(structure)
    env = cache_env(cache, threads)
    command = [sys.executable, "-m", "umadrive", "compile", "--model", model,
               "--structure", str(structure)] + (["--task", task] if task else [])
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return {"mode": "turbo", "start": "umadrive compile", "loaded_s": None,
            "first_answer_s": None, "first_answer_after_load_s": None, "full_speed_s": None,
            "full_speed_after_load_s": None, "uncompiled_step_s": None,
            "full_speed_step_s": None, "uncompiled_steps": 0,
            "compile_s": time.perf_counter() - start, "cache_hit": False}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        model, mode, steps_after, max_steps, launched, task = sys.argv[2:8]
        child(model, mode, int(steps_after), int(max_steps), float(launched), task or None)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", "--model", dest="model", default=str(DEMO),
                        help="UMA checkpoint, path or name (default: the demo model)")
    parser.add_argument("--steps-after", type=int, default=5)
    parser.add_argument("--oracle-python", help="fairchem-core's venv python: add its row")
    parser.add_argument("--task", help="the model's task, when it has several (default: its "
                                       "only one; fairchem's row: omat)")
    parser.add_argument("--max-steps", type=int, default=10_000,
                        help="steps after which a run stops even uncompiled (its compile "
                             "then stopped and not cached: the warm row is prepared by "
                             "`umadrive compile` instead)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of both sides (default %(default)s)")
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="startup-cache-"))
    runs = [("default", "cold"), ("turbo", "cold"), ("turbo", "warm")]
    load_before = os.getloadavg()
    results = []
    for mode, start in runs:
        if start == "warm" and results[-1]["full_speed_s"] is None:
            results.append(compile_ahead(args.model, cache, args.task, args.threads))
            print(json.dumps(results[-1]), flush=True)
        result = {"mode": mode, "start": start,
                  **measure(args.model, mode, args.steps_after, args.max_steps, cache,
                            args.task, args.threads)}
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.oracle_python:
        results.append(measure_fairchem(args.oracle_python, args.model, cache,
                                        args.task or "omat", args.threads))
        print(json.dumps(results[-1]), flush=True)

    def s(value, digits=1):
        return "–" if value is None else f"{value:.{digits}f}"

    table = ["| mode | start | model loaded s | first answer s (after load) | full speed s "
             "(after load) | s/step uncompiled | s/step full speed | compile s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        table.append(
            f"| {r['mode']} | {r['start']} | {s(r['loaded_s'])} | {s(r['first_answer_s'])} "
            f"({s(r['first_answer_after_load_s'])}) | {s(r['full_speed_s'])} "
            f"({s(r['full_speed_after_load_s'])}) | "
            f"{s(r['uncompiled_step_s'], 3)} | {s(r['full_speed_step_s'], 3)} | "
            f"{s(r['compile_s'])} |")
    load_after = os.getloadavg()
    table.append(f"\n{args.threads} torch thread(s); load average (1, 5, 15 min) before: "
                 f"{load_before}, after: {load_after}")
    write_results("startup", table, {"model": args.model, "threads": args.threads,
                                     "load_average_before": load_before,
                                     "load_average_after": load_after, "runs": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
