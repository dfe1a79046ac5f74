"""Real peers for the LAMMPS tests: ``umadrive serve``, ``umadrive lammps``, i-PI
and LAMMPS's ``lmp``, each a subprocess with its output in a file, bounded by a
timeout and killed at the end of the test."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "lammps_examples"
PEER_TIMEOUT_S = 90
_names = itertools.count()


def unique_socket(tag: str) -> str:
    """A unix socket name unique to this process and call (tests run in parallel)."""
    return f"ud-{tag}-{os.getpid()}-{next(_names)}"


def _environment() -> dict[str, str]:
    # The subprocesses import this checkout's umadrive whatever their working folder.
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), path) if p)}


def console_script(name: str) -> str:
    """A console script of this environment (i-pi, lmp)."""
    return shutil.which(name) or str(Path(sys.executable).with_name(name))


class Peers:
    """Starts processes in ``folder`` and ends every one of them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[tuple[subprocess.Popen, Path]] = []
        self.sockets: list[str] = []

    def socket(self, tag: str) -> str:
        """A unique socket name whose file is removed at the end if a killed peer left it."""
        name = unique_socket(tag)
        self.sockets.append(name)
        return name

    def start(self, label: str, argv: list[str]) -> subprocess.Popen:
        log = self.folder / f"{label}.out"
        with open(log, "w") as out:
            process = subprocess.Popen(
                argv, cwd=self.folder, stdout=out, stderr=subprocess.STDOUT, env=_environment()
            )
        self.started.append((process, log))
        return process

    def umadrive(self, label: str, *args: str) -> subprocess.Popen:
        return self.start(label, [sys.executable, "-m", "umadrive", *args])

    def serve_emt(self, name: str, template: str = "cuau.extxyz") -> subprocess.Popen:
        return self.umadrive("serve", "serve", "--model", "ase:emt", "--structure", template, "--unix", name)

    def wait(self, process: subprocess.Popen) -> int:
        try:
            return process.wait(timeout=PEER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{process.args} did not finish within {PEER_TIMEOUT_S} s\n{self.logs()}")

    def output(self, process: subprocess.Popen) -> str:
        return next(log for p, log in self.started if p is process).read_text()

    def wait_for_socket(self, name: str, process: subprocess.Popen) -> None:
        """Waits until a server process has created /tmp/ipi_NAME."""
        deadline = time.monotonic() + PEER_TIMEOUT_S
        while not os.path.exists(f"/tmp/ipi_{name}"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no socket /tmp/ipi_{name} from {process.args}\n{self.logs()}")
            time.sleep(0.05)

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for _, log in self.started)

    def stop_all(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()
        for name in self.sockets:
            if os.path.exists(f"/tmp/ipi_{name}"):
                os.unlink(f"/tmp/ipi_{name}")

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
    started = Peers(tmp_path)
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
        cwd=tmp_path, capture_output=True, text=True, timeout=PEER_TIMEOUT_S, env=_environment(),
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
