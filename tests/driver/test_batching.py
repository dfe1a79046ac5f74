"""PIMD with 8 beads of a periodic Cu/Au alloy, served by ``umadrive serve`` with
a UMA checkpoint in the official format (the tiny fixture ``uma_s1p1.pt``), in
float64: (a) ``--connections 8`` from one process, (b) i-PI's batched protocol
``batch_size 8`` on one connection, and both together. Every bead's potential
i-PI printed equals a direct one-structure ``predict`` call (another process,
:mod:`tests.driver.direct_uma`) on the positions i-PI printed, and the driver's
JSON log shows that all 8 beads shared one forward pass."""

from __future__ import annotations

import json
import subprocess
import sys

import ase.io
import numpy as np
import pytest
from ase.units import Hartree

from tests.driver.uma_run import float64_mode
from tests.peers import one_thread_env
from tests.reference import UMA_S1P1, cu3au_8
from umadrive.ipi_input import IpiRun, ipi_input_xml
from umadrive.testing import tolerance

pytest.importorskip("torch")

NBEADS = 8
STEPS = 3
TOL = tolerance("float64")


def run_pimd(processes, tmp_path, socket_name, *, connections: int, batch_size: int) -> list[dict]:
    """Runs i-PI and ``umadrive serve``; returns the driver's JSON log records."""
    structure = tmp_path / "alloy.extxyz"
    ase.io.write(structure, cu3au_8())
    run = IpiRun(structure=structure.name, unix=socket_name, ensemble="nvt", nbeads=NBEADS,
                 batch_size=batch_size, steps=STEPS, temperature_k=600.0,
                 properties=("step", "bead_potentials"), trajectories=("positions",))
    ipi = processes.ipi(ipi_input_xml(run))
    serve = processes.serve("--model", str(UMA_S1P1), "--task", "omat",
                            "--mode", str(float64_mode(tmp_path)), "--structure", str(structure),
                            "--unix", socket_name, "--connections", str(connections),
                            "--batch-window", "2000", "--log-every", "1",
                            "--log-json", str(tmp_path / "serve.jsonl"), env=one_thread_env())
    assert processes.wait(ipi) == 0, processes.logs()
    assert processes.wait(serve) == 0, processes.logs()
    return [json.loads(line) for line in (tmp_path / "serve.jsonl").read_text().splitlines()]


def check_beads_against_direct_calls(tmp_path, test_env) -> None:
    trajectories = [str(tmp_path / f"sim.positions_{b}.extxyz") for b in range(NBEADS)]
    subprocess.run([sys.executable, "-m", "tests.driver.direct_uma", str(UMA_S1P1), "omat",
                    str(tmp_path / "direct.json"), *trajectories], check=True, timeout=120,
                   env=test_env)
    direct = np.array(json.loads((tmp_path / "direct.json").read_text()))  # (bead, step) eV
    table = np.loadtxt(tmp_path / "sim.out", ndmin=2)
    assert table.shape == (STEPS + 1, 1 + NBEADS) and direct.shape == (NBEADS, STEPS + 1)
    n_atoms = len(cu3au_8())
    for row in range(STEPS + 1):
        if row > 0:  # the beads have spread apart: answers in the wrong order would show
            assert len({round(e, 6) for e in direct[:, row]}) == NBEADS
        for bead in range(NBEADS):
            got = table[row, 1 + bead] * Hartree
            assert abs(got - direct[bead, row]) <= TOL.energy_per_atom * n_atoms, (row, bead)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("connections, batch_size", [(8, 1), (1, 8), (2, 4)],
                         ids=["8 connections", "batch_size 8", "2 connections x batch_size 4"])
def test_pimd_beads_share_one_forward_pass_and_match_direct_calls(
        processes, tmp_path, socket_name, test_env, connections, batch_size):
    records = run_pimd(processes, tmp_path, socket_name, connections=connections,
                       batch_size=batch_size)
    steps = [r for r in records if r["event"] == "status"]
    assert sum(r["structures"] for r in steps) == NBEADS * (STEPS + 1)
    # i-PI hands out the first step while the connections are still opening;
    # from then on every step carries all 8 beads in one forward pass
    assert [r["structures"] for r in steps[-STEPS:]] == [NBEADS] * STEPS
    assert [r["requests"] for r in steps[-STEPS:]] == [connections] * STEPS
    check_beads_against_direct_calls(tmp_path, test_env)
