"""``umadrive serve`` with a UMA 1.2.1 checkpoint in the official format (the tiny
fixture ``uma_s1p2p1.pt``: per-dataset head experts, balanced channels) driving a
real i-PI 3.3 NVT run, float64: the potential i-PI printed at every step equals a
direct one-structure ``predict`` call (another process, :mod:`tests.driver.direct_uma`)
on the positions and cell i-PI printed."""

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
from tests.reference import DATA, cu3au_8
from umadrive.ipi_input import IpiRun, ipi_input_xml
from umadrive.testing import tolerance

pytest.importorskip("torch")

CHECKPOINT = DATA / "uma_s1p2p1.pt"
STEPS = 6
TOL = tolerance("float64")


@pytest.mark.timeout(240)
def test_nvt_served_from_a_1p2p1_checkpoint_matches_direct_calls(
        processes, tmp_path, socket_name, test_env):
    atoms = cu3au_8()
    structure = tmp_path / "alloy.extxyz"
    ase.io.write(structure, atoms)
    mode = float64_mode(tmp_path)
    run = IpiRun(structure=structure.name, unix=socket_name, ensemble="nvt", steps=STEPS,
                 timestep_fs=2.0, temperature_k=600.0, properties=("step", "potential"),
                 trajectories=("positions",))
    ipi = processes.ipi(ipi_input_xml(run))
    serve = processes.serve("--model", str(CHECKPOINT), "--task", "omat", "--mode", str(mode),
                            "--structure", str(structure), "--unix", socket_name,
                            "--connect-timeout", "60",
                            env=one_thread_env())
    assert processes.wait(ipi) == 0, processes.logs()
    assert processes.wait(serve) == 0, processes.logs()

    subprocess.run([sys.executable, "-m", "tests.driver.direct_uma", str(CHECKPOINT), "omat",
                    str(tmp_path / "direct.json"), str(tmp_path / "sim.positions_0.extxyz")],
                   check=True, timeout=120, env=test_env)
    direct = np.array(json.loads((tmp_path / "direct.json").read_text()))[0]
    table = np.loadtxt(tmp_path / "sim.out", ndmin=2)
    assert len(direct) == len(table) == STEPS + 1
    # the atoms moved: a stale or another step's answer would be off by far more than
    # the tolerance
    gaps = np.abs(direct[:, None] - direct[None, :])[np.triu_indices(len(direct), 1)]
    assert gaps.min() > 10 * TOL.energy_per_atom * len(atoms)
    for (step, potential), energy in zip(table, direct):
        assert abs(potential * Hartree - energy) <= TOL.energy_per_atom * len(atoms), step
