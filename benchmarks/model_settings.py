"""The README's "Inference settings" table: ``umadrive bench`` on the two models.

    .oracle/bin/python tools/make_reference_fixtures.py \
        --benchmark-checkpoint /tmp/uma-s-random.pt          # UMA-S-sized, random weights
    python benchmarks/model_settings.py /tmp/uma-s-random.pt [--threads 2] [--device cpu]

Runs, in one process per model (modes take turns within each round):
default, turbo and each single setting at 108 and 1,000 atoms of fcc Cu3Au on
the small committed checkpoint (``tests/data/uma_s1p1.pt``), the same at 108 atoms
on the UMA-S-sized one (1,000 atoms with ``--large``), and the peak memory with and
without activation checkpointing at 4,000 atoms (small model; ``--memory-checkpoint``
for another). JSON lines go to ``benchmarks/out/model_settings.jsonl``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "tests" / "data" / "uma_s1p1.pt"
CUDA_ONLY = ("tf32=True", "wigner_cuda=True")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("uma_s", help="UMA-S-sized checkpoint (made by tools/, not committed)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large", action="store_true", help="UMA-S at 1,000 atoms too (slow on CPU)")
    parser.add_argument("--memory-checkpoint", default=str(SMALL))
    args = parser.parse_args()

    from umadrive.commands.bench import MODES

    modes = [mode for mode in MODES if args.device.startswith("cuda") or mode not in CUDA_ONLY]
    out_dir = ROOT / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    common = ["--device", args.device, "--threads", str(args.threads), "--modes", ",".join(modes)]
    runs = [
        ["--checkpoint", str(SMALL), "--atoms", "108", "--atoms", "1000", "--repeats", "25",
         "--memory-atoms", "4000", "--memory-checkpoint", args.memory_checkpoint],
        ["--checkpoint", args.uma_s, "--atoms", "108", *(["--atoms", "1000"] if args.large else []),
         "--repeats", str(args.repeats)],
    ]
    for index, extra in enumerate(runs):
        out = out_dir / f"model_settings_{index}.jsonl"
        command = [sys.executable, "-m", "umadrive", "bench", *common, *extra, "--out", str(out)]
        print("$", " ".join(command), flush=True)
        if subprocess.run(command, cwd=ROOT).returncode:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
