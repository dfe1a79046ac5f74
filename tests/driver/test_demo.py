"""``umadrive demo`` runs a short i-PI simulation and prints its summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.mark.timeout(300)
@pytest.mark.parametrize("engine, mode", [("ipi", "turbo"), ("ase", "default")])
def test_demo_runs_a_few_steps(tmp_path, engine, mode):
    """The bundled demo model behind both engines; turbo (compiled) once."""
    result = subprocess.run(
        [sys.executable, "-m", "umadrive", "demo", "--steps", "5", "--engine", engine,
         "--mode", mode, "--output", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=280,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "done: 5 steps" in result.stdout
    log = (tmp_path / "run" / "serve.log").read_text()
    assert "exiting" in log
    if mode == "turbo" and "left unfinished" in log:  # cold cache: the helper compiled
        helper = re.search(r"compiling the model in a helper process \(pid (\d+)", log)
        assert helper and f"stopped the compile helper process (pid {helper[1]})" in log, log
        assert _gone(int(helper[1]))


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    """Whether process ``pid`` has ended (a zombie not yet reaped counts as ended)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def demo(tmp_path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "umadrive", "demo", "--steps", "3",
                           "--output", str(tmp_path / "run"), *args],
                          capture_output=True, text=True, timeout=280, env=env)


@pytest.mark.timeout(300)
def test_demo_progress_summary_and_plot(tmp_path):
    """Piped: plain progress lines (tqdm's meter), never carriage returns; the PNG
    holds the potential energy i-PI wrote."""
    import matplotlib.image
    import numpy as np

    from umadrive.plots import figure, read_run

    result = demo(tmp_path, "--mode", "default")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\r" not in result.stdout
    progress = [line for line in result.stdout.splitlines() if line.startswith("MD steps:")]
    assert progress and "3/3" in progress[-1] and "step" in progress[-1]
    png = tmp_path / "run" / "run.png"
    assert f"plot: {png}" in result.stdout
    assert matplotlib.image.imread(png).ndim == 3
    table = np.loadtxt(tmp_path / "run" / "sim.out", ndmin=2)  # the demo's i-PI columns
    potential = figure(read_run(tmp_path / "run")).axes[0]
    assert potential.get_ylabel() == "potential energy (eV)"
    np.testing.assert_allclose(potential.get_lines()[0].get_ydata(), table[:, 4])


@pytest.mark.timeout(200)
@pytest.mark.parametrize("args, match", [
    (("--mode", "turob"), "--mode 'turob': expected default or turbo"),
    (("--model", "uma-s-1p1"), "model 'uma-s-1p1' not found. Put uma-s-1p1.pt"),
    (("--model", "missing/x.pt"), "no such file: 'missing/x.pt'"),
])
@pytest.mark.parametrize("engine", ["ipi", "ase"])
def test_demo_prints_the_drivers_error(tmp_path, args, match, engine):
    env = {**os.environ, "UMADRIVE_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    result = demo(tmp_path, "--engine", engine, *args, env=env)
    assert result.returncode == 1
    assert "the driver stopped (status 2)" in result.stderr
    assert match in result.stderr, result.stderr
