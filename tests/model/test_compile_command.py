"""``umadrive compile``'s refusals (no compile happens) and its progress line;
the compile itself runs in ``test_compile_inductor.py``."""

from __future__ import annotations

import io

import ase.io
import pytest
from ase.build import bulk

from umadrive.cli import main
from umadrive.commands.compile import progress_line

from tests.model.helpers import checkpoint_path


@pytest.fixture
def structure(tmp_path):
    path = tmp_path / "cu.extxyz"
    ase.io.write(path, bulk("Cu", "fcc", a=3.6, cubic=True))
    return path


@pytest.mark.parametrize(("extra", "message"), [
    (["--batch", "0"], "--batch 0: expected at least 1 structure per batch"),
    (["--mode", "default"], "--mode default does not compile"),
    (["--mode", "fast"], "--mode 'fast': expected default or turbo"),
])
def test_bad_values_exit_2_naming_them(structure, tmp_path, monkeypatch, caplog, extra,
                                       message):
    monkeypatch.setenv("UMADRIVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    status = main(["compile", "--model", str(checkpoint_path("s1p1")), "--structure",
                   str(structure), "--task", "omat", *extra])
    assert status == 2
    assert message in caplog.text
    assert not (tmp_path / "cache" / "compiled").exists()


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_the_progress_line_updates_in_place_on_a_terminal_only():
    terminal, log_file = _Stream(True), _Stream(False)
    for stream in (terminal, log_file):
        progress = progress_line(stream)
        progress("compiling the model for cpu (inductor): 10 s", False)
        progress("compiling the model for cpu (inductor): 11 s", False)
        progress("compiled the model in 12.0 s", True)
    assert terminal.getvalue().count("\n") == 1 and terminal.getvalue().count("\r") == 3
    widest = len("compiling the model for cpu (inductor): 11 s")
    assert terminal.getvalue().endswith("\r" + "compiled the model in 12.0 s".ljust(widest) + "\n")
    assert log_file.getvalue() == "compiled the model in 12.0 s\n"
