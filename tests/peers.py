"""Real peers for the tests that start processes: each a subprocess with its output
in ``<name>.log``, waited for within a bounded time and killed at the end of the test."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from umadrive.protocol.addresses import DEFAULT_PREFIX

REPO = Path(__file__).resolve().parents[1]
_socket_numbers = itertools.count()


def unique_socket(tag: str) -> str:
    """A unix socket name unique to this process and call (tests run in parallel)."""
    return f"umadrive-{tag}-{os.getpid()}-{next(_socket_numbers)}"


def remove_socket(name: str) -> None:
    """Removes the socket file of NAME (DEFAULT_PREFIX + NAME) if a killed peer left it behind."""
    if os.path.exists(DEFAULT_PREFIX + name):
        os.unlink(DEFAULT_PREFIX + name)


def checkout_environment() -> dict[str, str]:
    """This environment with this checkout first on PYTHONPATH: subprocesses import
    this checkout's umadrive and ``tests`` whatever their working folder."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), path) if p)}


def one_thread_env() -> dict[str, str]:
    """This environment with one torch/OpenMP thread (test machines have few cores
    shared by parallel tests; more threads only contend)."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def console_script(name: str) -> str:
    """A console script of this environment (i-pi, lmp, mpiexec)."""
    return shutil.which(name) or str(Path(sys.executable).with_name(name))


class Peers:
    """Starts processes in ``folder`` with their output in ``<name>.log``; waits at
    most ``timeout_s`` seconds for one, failing the test with every log; ends them all.

    ``env``: the environment of every process unless :meth:`start` gives one
    (None: this process's). Subclasses set ``own_session`` for processes that start
    their own (``mpiexec``): :meth:`stop_all` then kills the whole process group.
    """

    own_session = False

    def __init__(self, folder: Path, *, timeout_s: float, env: dict[str, str] | None = None) -> None:
        self.folder = folder
        self.timeout_s = timeout_s
        self.env = env
        self.started: list[tuple[subprocess.Popen, Path]] = []
        self.sockets: list[str] = []

    def socket(self, tag: str) -> str:
        """A unique socket name whose file :meth:`stop_all` removes if a killed peer left it."""
        name = unique_socket(tag)
        self.sockets.append(name)
        return name

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        log = self.folder / f"{name}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(
                argv, cwd=cwd or self.folder, env=self.env if env is None else env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=self.own_session,
            )
        self.started.append((process, log))
        return process

    def wait(self, process: subprocess.Popen) -> int:
        try:
            return process.wait(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{process.args} did not finish within {self.timeout_s} s:\n{self.logs()}")

    def output(self, process: subprocess.Popen) -> str:
        return next(log for p, log in self.started if p is process).read_text()

    def logs(self) -> str:
        """The last 3000 characters of every log, for failure messages."""
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for _, log in self.started)

    def stop_all(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                # the group id is the pid, not reusable while the leader is not reaped
                if self.own_session:
                    os.killpg(process.pid, signal.SIGKILL)
                else:
                    process.kill()
                process.wait()
        for name in self.sockets:
            remove_socket(name)
