"""Fixtures that start real peers: ``umadrive serve`` and i-PI as subprocesses,
always bounded and always cleaned up."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.peers import Peers, checkout_environment, console_script

PEER_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


class Processes(Peers):
    """:class:`Peers` that start ``umadrive serve`` and i-PI."""

    def serve(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        return self.start("serve", [sys.executable, "-m", "umadrive", "serve", *args], env=env)

    def ipi(self, input_xml: str) -> subprocess.Popen:
        (self.folder / "input.xml").write_text(input_xml)
        return self.start("ipi", [console_script("i-pi"), "input.xml"])


@pytest.fixture
def processes(tmp_path: Path):
    procs = Processes(tmp_path, timeout_s=PEER_TIMEOUT_S)
    yield procs
    procs.stop_all()


@pytest.fixture
def test_env() -> dict:
    """Environment for subprocesses that must import helpers from ``tests``."""
    return checkout_environment()
