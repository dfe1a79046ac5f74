"""Fixtures that start real peers: ``umadrive serve`` and i-PI as subprocesses,
always bounded and always cleaned up."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PEER_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


class Processes:
    """Starts subprocesses with their output in files and ends them all."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, name: str, argv: list[str], env: dict | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        log = self.folder / f"{name}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(argv, cwd=cwd or self.folder, stdout=out,
                                       stderr=subprocess.STDOUT, env=env)
        self.started.append((process, log))
        return process

    def serve(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        return self.start("serve", [sys.executable, "-m", "umadrive", "serve", *args], env=env)

    def ipi(self, input_xml: str) -> subprocess.Popen:
        (self.folder / "input.xml").write_text(input_xml)
        return self.start("ipi", [self.ipi_executable(), "input.xml"])

    @staticmethod
    def ipi_executable() -> str:
        return shutil.which("i-pi") or str(Path(sys.executable).with_name("i-pi"))

    def wait(self, process: subprocess.Popen) -> int:
        try:
            return process.wait(timeout=PEER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{process.args} did not finish within {PEER_TIMEOUT_S} s:\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for _, log in self.started)

    def stop_all(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def processes(tmp_path: Path):
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()


@pytest.fixture
def test_env() -> dict:
    """Environment for subprocesses that must import helpers from ``tests``."""
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p)}
