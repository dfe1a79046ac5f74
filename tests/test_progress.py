"""umadrive.progress: tqdm's updating line on a terminal, plain lines when piped."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import select
import struct
import termios

import pytest

from umadrive.progress import Progress


def test_piped_output_is_plain_lines_with_rate_and_eta():
    out = io.StringIO()
    with Progress(10, "MD steps", unit="step", file=out, every_s=1e-9) as progress:
        for step in range(1, 4):
            progress.update_to(step, "driver: ok")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [line.split("|")[0] for line in lines] == ["MD steps:  10%", "MD steps:  20%",
                                                      "MD steps:  30%"]  # no repeated last line
    assert "3/10" in lines[-1] and "step/s" in lines[-1] and "driver: ok" in lines[-1]
    assert "<" in lines[-1]  # elapsed<remaining: the ETA


def test_piped_output_waits_every_s_between_lines():
    out = io.StringIO()
    with Progress(100, "MD steps", file=out, every_s=3600) as progress:
        for step in range(1, 50):
            progress.update_to(step)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "49/100" in lines[0]  # only the final line


def read_all(fd: int) -> str:
    chunks = []
    while select.select([fd], [], [], 0.1)[0]:
        chunks.append(os.read(fd, 65536))
    return b"".join(chunks).decode()


def test_terminal_output_is_one_updating_line():
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        with os.fdopen(follower, "w", closefd=False) as terminal:
            with Progress(5, "MD steps", unit="step", file=terminal) as progress:
                for step in range(1, 6):
                    progress.update_to(step)
        written = read_all(leader)
    finally:
        os.close(leader)
        os.close(follower)
    assert written.count("\r") >= 5 and written.count("\n") <= 1
    assert "5/5" in written


def test_every_s_must_be_positive():
    with pytest.raises(ValueError, match="every_s=0 must be > 0"):
        Progress(1, "x", file=io.StringIO(), every_s=0)


def test_restart_clock_counts_rate_from_then():
    out = io.StringIO()
    progress = Progress(10, "MD steps", unit="step", file=out, every_s=1e-9)
    progress._start -= 1000.0  # a long warm-up before the first step
    progress.restart_clock()
    progress.update_to(5)
    assert "16:40" not in progress.line() and "00:00<00:00" in progress.line()
