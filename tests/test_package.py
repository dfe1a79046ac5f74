"""Package-level promises: the protocol package imports without torch, and the
command line answers."""

import subprocess
import sys


def test_protocol_imports_without_torch():
    code = (
        "import sys, umadrive.protocol, umadrive.structure;"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_info_runs():
    out = subprocess.run(
        [sys.executable, "-m", "umadrive", "info"], check=True, capture_output=True, text=True
    ).stdout
    assert "umadrive" in out and "numpy" in out
