"""``umadrive bench``: JSON lines and a table from a real (short) run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from umadrive.commands.bench import cu3au


@pytest.mark.parametrize("atoms, shape", [(108, (3, 3, 3)), (1000, (5, 5, 10)), (4000, (10, 10, 10))])
def test_benchmark_systems_are_ordered_cu3au(atoms, shape):
    crystal = cu3au(atoms)
    assert len(crystal) == atoms
    assert Counter(crystal.get_chemical_symbols()) == {"Cu": atoms * 3 // 4, "Au": atoms // 4}
    assert crystal.cell.lengths() == pytest.approx([3.75 * n for n in shape])
    with pytest.raises(ValueError, match="--atoms 10 is not a multiple of 4"):
        cu3au(10)


def test_bench_prints_json_lines_and_a_table(uma_checkpoint_path, tmp_path):
    out = tmp_path / "bench.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "umadrive", "bench", "--checkpoint", str(uma_checkpoint_path("s1p1")),
         "--atoms", "32", "--modes", "default,merge_mole=True,tf32=True", "--repeats", "2",
         "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [line["mode"] for line in lines] == ["default", "merge_mole=True", "tf32=True"]
    assert lines[0]["ratio"] == 1.0 and all(line["median_s"] > 0 for line in lines)
    assert lines[2]["inactive"] == ["tf32"]
    assert "| uma_s1p1 | 32 | tf32=True (inactive on cpu) |" in done.stdout
    assert [json.loads(line) for line in out.read_text().splitlines()] == lines
    # progress on stderr (piped: plain lines), the last one with every call done
    progress = [line for line in done.stderr.splitlines() if "32 atoms:" in line]
    assert progress and "9/9" in progress[-1] and "\r" not in done.stderr


def test_bench_refuses_unknown_modes(uma_checkpoint_path):
    done = subprocess.run(
        [sys.executable, "-m", "umadrive", "bench", "--checkpoint", str(uma_checkpoint_path("s1p1")),
         "--modes", "default,fast"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "unknown: ['fast']" in done.stderr
