"""``umadrive demo`` runs a short i-PI simulation and prints its summary."""

from __future__ import annotations

import subprocess
import sys

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
    assert "exiting" in (tmp_path / "run" / "serve.log").read_text()
