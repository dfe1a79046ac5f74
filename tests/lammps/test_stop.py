"""What LAMMPS sees when ``umadrive serve`` is stopped in the middle of a force
call and its computation outlasts ``--stop-grace``: the bridge stops LAMMPS with
an error naming the end of stream (exit status 1), never a step with zero
forces."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.lammps.scripts import one_copper_cell
from tests.lammps.conftest import PEER_TIMEOUT_S, thermo_rows

SCRIPT = one_copper_cell(5, thermo=1)


@pytest.mark.timeout(180)
def test_a_driver_stopped_mid_call_stops_lammps_with_an_error(peers):
    (peers.folder / "in.copper").write_text(SCRIPT)
    subprocess.run([sys.executable, "-m", "umadrive", "lammps", "in.copper", "--write-template",
                    "copper.extxyz", "--log", "none"], cwd=peers.folder, check=True,
                   capture_output=True, timeout=PEER_TIMEOUT_S, env=peers.env)
    marker = peers.folder / "computing"
    name = peers.socket("stop")
    serve = peers.umadrive(
        "serve", "serve", "--model", "ase:tests.driver.slow_calculator:SlowEMT", "--model-kwargs",
        json.dumps({"marker": str(marker), "delay": 600}), "--structure", "copper.extxyz",
        "--unix", name, "--stop-grace", "1")
    bridge = peers.umadrive("lammps", "lammps", "in.copper", "--unix", name, "--log", "none")
    deadline = time.monotonic() + PEER_TIMEOUT_S
    while not marker.exists():  # inside the first force call
        assert time.monotonic() < deadline and bridge.poll() is None, peers.logs()
        time.sleep(0.05)
    serve.send_signal(signal.SIGTERM)
    assert peers.wait(serve) == 3, peers.logs()
    assert peers.wait(bridge) == 1, peers.logs()
    output = peers.output(bridge)
    assert "umadrive lammps: error at step 0: driver on unix:" in output, output
    assert "expected FORCEREADY, received end of stream; umadrive serve's output says why" \
        in output, output
    assert thermo_rows(output) == []
