"""GPU rows of the README's "Which backend" table: umadrive's own model and
fairchem-core (``--model fairchem:...``), each in ``default`` and ``turbo`` mode,
on random checkpoints with the sizes and format of UMA-S-1.1 and UMA-S-1.2.1.
Run by ``bash benchmarks/gpu_check.sh backends`` on a lent GPU machine.
UNTESTED: written in a session without a GPU.

    python benchmarks/backend_gpu_check.py [--versions 1.1 1.2.1] [--modes default turbo]
        [--repeats 10] [--device cuda]

(``--device cpu`` is a smoke run of this script, not a measurement.)

The checkpoints are written by ``tools/make_reference_fixtures.py
--benchmark-checkpoint PATH --benchmark-version V`` (needs fairchem-core) unless
PATH exists. Each row runs in its own process (a failure or a compile stays
there) and times, through the driver's backend (``make_backend``, task omat,
float32, ``--device cuda``), after 2 warm-up calls: one 1,000-atom Cu3Au
structure per call (MD) and 8 beads of 108 atoms in one call (PIMD); medians of
``--repeats`` calls, with ``torch.cuda.synchronize`` before each clock read.
A random checkpoint is not on UMA Nitro's MD5 allowlist, so fairchem's ``turbo``
(its ``nitro`` preset) runs its ``multigpu`` fall-back here; the row records
the settings fairchem ended up running. Prints a markdown table and writes
``$OUT`` (or benchmarks/out) ``/backend_gpu.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHECKPOINTS = {"1.1": Path("/tmp/uma-s-1p1-random.pt"), "1.2.1": Path("/tmp/uma-s-1p2p1-random.pt")}
BACKENDS = ("umadrive", "fairchem")
MODES = ("default", "turbo")
ROW_TIMEOUT_S = 240


def timed(call, structures, repeats: int, sync) -> float:
    """Median seconds of ``call(structures)`` after 2 warm-up calls."""
    for _ in range(2):
        call(structures)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        call(structures)
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def row(spec: str, mode: str, repeats: int, device: str) -> dict:
    """One backend and mode: load seconds, ms per MD step and per PIMD step."""
    import torch

    from benchmarks.common import cu3au, perturbed
    from umadrive.driver.backends import UmaOptions, make_backend

    md, beads = cu3au((5, 5, 10)), cu3au((3, 3, 3))
    options = UmaOptions(task="omat", mode=mode, device=device)
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    start = time.perf_counter()
    backend = make_backend(spec, md, uma=options)
    load_s = time.perf_counter() - start
    md_s = timed(backend.compute, perturbed(md, 1), repeats, sync)
    pimd = make_backend(spec, beads, uma=options)
    pimd_s = timed(pimd.compute, perturbed(beads, 8), repeats, sync)
    result = {"load_s": load_s, "md_1000_ms": md_s * 1e3, "pimd_8x108_ms": pimd_s * 1e3,
              "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0}
    if spec.startswith("fairchem:"):
        from fairchem.core.units.mlip_unit.api.inference import describe_inference_settings

        result["fairchem_ran"] = describe_inference_settings(pimd.unit.inference_settings)
        result["fairchem_fallbacks"] = backend.fallbacks + pimd.fallbacks
    return result


def checkpoint(version: str) -> Path:
    path = CHECKPOINTS[version]
    if not path.exists():
        subprocess.run([sys.executable, str(ROOT / "tools" / "make_reference_fixtures.py"),
                        "--benchmark-checkpoint", str(path), "--benchmark-version", version],
                       check=True, timeout=300, cwd=ROOT)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", nargs="+", default=list(CHECKPOINTS), choices=list(CHECKPOINTS))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--row", nargs=2, metavar=("SPEC", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        print(json.dumps(row(*args.row, args.repeats, args.device)), flush=True)
        return 0
    out = Path(os.environ.get("OUT", ROOT / "benchmarks" / "out"))
    out.mkdir(parents=True, exist_ok=True)
    results, lines = [], ["| checkpoint | backend | mode | load s | 1,000 atoms ms/step | "
                          "8 x 108 beads ms/step | peak MiB | fairchem ran |",
                          "|---|---|---|---:|---:|---:|---:|---|"]
    for version in args.versions:
        try:
            path = checkpoint(version)
        except (subprocess.SubprocessError, OSError) as error:
            print(f"FAIL UMA-S-{version}-sized checkpoint: {error}", flush=True)
            continue
        for backend in BACKENDS:
            spec = f"fairchem:{path}" if backend == "fairchem" else str(path)
            for mode in args.modes:
                record = {"version": version, "backend": backend, "mode": mode}
                try:
                    done = subprocess.run([sys.executable, __file__, "--row", spec, mode,
                                           "--repeats", str(args.repeats), "--device",
                                           args.device], capture_output=True,
                                          text=True, timeout=ROW_TIMEOUT_S)
                    if done.returncode == 0:
                        record.update(json.loads(done.stdout.strip().splitlines()[-1]))
                    else:
                        record["error"] = done.stderr.strip().splitlines()[-1:] or ["?"]
                except subprocess.TimeoutExpired:
                    record["error"] = [f"timed out after {ROW_TIMEOUT_S} s"]
                print(json.dumps(record), flush=True)
                results.append(record)
                if "error" in record:
                    lines.append(f"| UMA-S-{version} | {backend} | {mode} | failed: "
                                 f"{record['error'][0]} | | | | |")
                else:
                    lines.append(f"| UMA-S-{version} | {backend} | {mode} | {record['load_s']:.1f} | "
                                 f"{record['md_1000_ms']:.1f} | {record['pimd_8x108_ms']:.1f} | "
                                 f"{record['peak_memory_mib']:.0f} | "
                                 f"{record.get('fairchem_ran', '')} |")
    (out / "backend_gpu.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    print("\n".join(lines))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
