"""Real peers for the LAMMPS tests: ``umadrive serve``, ``umadrive lammps``, i-PI
and LAMMPS's ``lmp``, each a subprocess with its output in a file, bounded by a
timeout and killed at the end of the test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.peers import REPO, Peers, checkout_environment
from umadrive.protocol.addresses import DEFAULT_PREFIX

EXAMPLES = REPO / "lammps_examples"
PEER_TIMEOUT_S = 90


class LammpsPeers(Peers):
    """:class:`Peers` that start ``umadrive serve`` (EMT) and ``umadrive lammps``."""

    def umadrive(self, label: str, *args: str) -> subprocess.Popen:
        return self.start(label, [sys.executable, "-m", "umadrive", *args])

    def serve_emt(self, name: str, template: str = "cuau.extxyz") -> subprocess.Popen:
        return self.umadrive("serve", "serve", "--model", "ase:emt", "--structure", template, "--unix", name)

    def wait_for_socket(self, name: str, process: subprocess.Popen) -> None:
        """Waits until a server process has created its socket DEFAULT_PREFIX + NAME."""
        deadline = time.monotonic() + self.timeout_s
        while not os.path.exists(DEFAULT_PREFIX + name):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no socket {DEFAULT_PREFIX}{name} from {process.args}\n{self.logs()}")
            time.sleep(0.05)

    def run_bridge(self, script: str, *args: str, template: str = "cuau.extxyz") -> tuple[int, str, int]:
        """``umadrive serve`` (EMT) + ``umadrive lammps SCRIPT``, both to the end:
        (bridge exit status, bridge output, serve exit status)."""
        name = self.socket("bridge")
        serve = self.serve_emt(name, template)
        bridge = self.umadrive("lammps", "lammps", script, "--unix", name, "--log", "none", *args)
        status = self.wait(bridge)
        return status, self.output(bridge), self.wait(serve)


@pytest.fixture
def peers(tmp_path: Path):
    started = LammpsPeers(tmp_path, timeout_s=PEER_TIMEOUT_S, env=checkout_environment())
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    """A copy of lammps_examples/ with the template cuau.extxyz written by
    example (d), the way its README does it."""
    for path in EXAMPLES.iterdir():
        if path.is_file():
            shutil.copy(path, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "umadrive", "lammps", "in.data2template", "--var", "data=cuau.data",
         "--write-template", "cuau.extxyz", "--log", "none"],
        cwd=tmp_path, capture_output=True, text=True, timeout=PEER_TIMEOUT_S, env=checkout_environment(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp_path


def thermo_rows(output: str) -> list[dict[str, float]]:
    """The rows of every LAMMPS thermo table in ``output``, keyed by column."""
    rows: list[dict[str, float]] = []
    columns: list[str] | None = None
    for line in output.splitlines():
        words = line.split()
        if words[:1] == ["Step"]:
            columns = words
        elif columns and line.startswith("Loop time"):
            columns = None
        elif columns and len(words) == len(columns) and re.fullmatch(r"-?\d+", words[0]):
            rows.append(dict(zip(columns, map(float, words))))
    return rows
