"""``umadrive compile``'s refusals (no compile happens), its progress line and
its report of a batch that needs another compile; the compile with inductor
runs in ``test_compile_inductor.py``."""

from __future__ import annotations

import functools
import io

import ase.io
import pytest
import torch
from ase.build import bulk

from umadrive.cli import main
from umadrive.commands.compile import progress_line
from umadrive.driver.backends import uma as uma_backend
from umadrive.model.predictor import get_predict_unit

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


def test_a_batch_that_needs_another_compile_exits_1_saying_so(structure, tmp_path, monkeypatch,
                                                              caplog):
    """`--batch` runs a batch after the compile with torch set to fail on a
    recompile: a batch the stored model does not serve is reported with torch's
    reason and the command fails. Forced here by making the precompiled guards
    refuse every call after the warm-up (as they refuse, e.g., a batch routing
    its experts), so that torch would trace the model again (``aot_eager``
    backend: no code generation)."""
    monkeypatch.setenv("UMADRIVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setattr(uma_backend, "get_predict_unit",
                        functools.partial(get_predict_unit, compile_backend="aot_eager"))
    compute = uma_backend.UmaBackend.compute

    def compute_refused(self, structures):
        self.unit._compiled._precompiled.guard_check = lambda *inputs: False
        return compute(self, structures)

    monkeypatch.setattr(uma_backend.UmaBackend, "compute", compute_refused)
    torch._dynamo.reset()  # no traces of earlier tests on the model's code
    status = main(["compile", "--model", str(checkpoint_path("s1p1")), "--structure",
                   str(structure), "--task", "omat", "--batch", "2"])
    assert status == 1
    assert ("a batch of 2 structures failed after compiling (the stored model must serve it "
            "without compiling again): Detected recompile") in caplog.text
