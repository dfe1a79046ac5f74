"""``--model fairchem:...``: fairchem-core's predict unit behind umadrive's serving.

* i-PI PIMD (8 beads, real i-PI) served by ``fairchem:`` equals fairchem's own
  ASE calculator called on each bead alone (:mod:`tests.driver.direct_fairchem`),
  with all beads of a step in one forward pass;
* the official-format fixture served by ``fairchem:`` and by umadrive's model
  agree to float32 tolerance;
* a checkpoint whose pickle runs a shell command is refused before fairchem is
  imported, and fairchem's loader, given the same file, runs the command;
* the mode mapping, model names, the fall-back log line, and the one-line
  error without fairchem.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.units import Hartree

from tests.driver.uma_run import float64_mode
from tests.peers import one_thread_env
from tests.reference import UMA_S1P1, cu3au_8
from umadrive.driver.backends import UmaOptions, make_backend
from umadrive.ipi_input import IpiRun, ipi_input_xml
from umadrive.model.safe_gate import UnsafeCheckpointError, check_checkpoint
from umadrive.structure import Structure
from umadrive.testing import tolerance

torch = pytest.importorskip("torch")

needs_fairchem = pytest.mark.skipif(
    importlib.util.find_spec("fairchem") is None,
    reason="fairchem-core is not installed (pip install 'umadrive[fairchem]'; CI installs it)")

NBEADS = 8
STEPS = 3
SPEC = f"fairchem:{UMA_S1P1}"


class ShellCommand:
    """Pickles as a call of ``os.system(command)``: what a malicious checkpoint holds."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def malicious_checkpoint(folder, marker) -> str:
    """A torch zip file shaped like a checkpoint (a config and a tensor) whose
    pickle creates ``marker`` when unpickled with full pickle."""
    path = folder / "evil.pt"
    torch.save({"model_config": {"model": "uma"}, "weights": torch.zeros(3),
                "tasks_config": ShellCommand(f"touch {marker}")}, path)
    return str(path)


def run_python(code: str, test_env: dict, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=test_env)


def perturbed(template, seeds) -> list[Structure]:
    structures = []
    for seed in seeds:
        atoms = template.copy()
        atoms.rattle(0.05, seed=seed)
        structures.append(Structure.from_atoms(atoms))
    return structures


# --- the safety gate -------------------------------------------------------------


def test_the_gate_passes_an_official_format_checkpoint():
    check_checkpoint(UMA_S1P1)


def test_the_gate_refuses_a_pickle_that_calls_os_system(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(UnsafeCheckpointError, match=f"global {os.system.__module__}.system"):
        check_checkpoint(malicious_checkpoint(tmp_path, marker))
    assert not marker.exists()


def test_the_gate_refuses_a_file_it_cannot_read(tmp_path):
    path = tmp_path / "not_a_zip.pt"
    path.write_bytes(b"\x80\x04K\x01.")  # a bare pickle, not a torch zip file
    with pytest.raises(UnsafeCheckpointError, match="cannot read it"):
        check_checkpoint(path)


@needs_fairchem
def test_a_malicious_checkpoint_is_refused_before_fairchem_is_imported(tmp_path, test_env):
    marker = tmp_path / "ran"
    path = malicious_checkpoint(tmp_path, marker)
    ase.io.write(tmp_path / "cu.extxyz", bulk("Cu", "fcc", a=3.6, cubic=True))
    # the real command line, in a process that then reports what it imported
    result = run_python(
        "import sys\n"
        "from umadrive.cli import main\n"
        f"status = main(['serve', '--model', 'fairchem:{path}', '--task', 'omat', "
        f"'--structure', '{tmp_path / 'cu.extxyz'}', '--unix', 'umadrive-fc-gate'])\n"
        "print(status, sorted({m.split('.')[0] for m in sys.modules} & {'fairchem'}))\n",
        test_env)
    assert result.stdout.split("\n")[0] == "2 []", result.stdout + result.stderr
    refusal = [line for line in result.stderr.splitlines() if "refusing checkpoint" in line]
    assert len(refusal) == 1, result.stderr
    assert f"{os.system.__module__}.system" in refusal[0]
    assert not marker.exists()


@needs_fairchem
def test_fairchem_would_have_run_the_malicious_checkpoint(tmp_path, test_env):
    """The refusal above matters: fairchem's own loader, given the same file, runs
    the command while unpickling it (and then fails on the content)."""
    marker = tmp_path / "ran"
    path = malicious_checkpoint(tmp_path, marker)
    run_python("from fairchem.core.units.mlip_unit import load_predict_unit\n"
               f"load_predict_unit({path!r}, 'batch', device='cpu')\n", test_env)
    assert marker.exists()


def test_without_fairchem_the_error_is_one_line_naming_the_extra(tmp_path, test_env):
    ase.io.write(tmp_path / "cu.extxyz", bulk("Cu", "fcc", a=3.6, cubic=True))
    result = run_python(
        "import sys\n"
        "sys.modules['fairchem'] = None  # as if fairchem-core were not installed\n"
        "from umadrive.cli import main\n"
        f"sys.exit(main(['serve', '--model', '{SPEC}', '--task', 'omat', "
        f"'--structure', '{tmp_path / 'cu.extxyz'}', '--unix', 'umadrive-fc-missing']))\n",
        test_env)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "pip install 'umadrive[fairchem]'" in errors[0], result.stderr


# --- in this process, with fairchem ------------------------------------------------


@pytest.fixture(scope="module")
def presets():
    from fairchem.core.units.mlip_unit.api.inference import NAME_TO_INFERENCE_SETTING

    return NAME_TO_INFERENCE_SETTING


@needs_fairchem
def test_modes_map_to_fairchem_presets(presets, tmp_path):
    from umadrive.driver.backends.fairchem import fairchem_settings

    assert fairchem_settings("default", presets) == presets["batch"]
    assert fairchem_settings("turbo", presets) == presets["nitro"]
    for name in ("high-precision", "batch", "multigpu", "nitro", "traineval"):
        assert fairchem_settings(name, presets) == presets[name]
    assert fairchem_settings(str(float64_mode(tmp_path)), presets) == dataclasses.replace(
        presets["batch"], base_precision_dtype=torch.float64)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"merge_moles": True}))
    with pytest.raises(ValueError, match="merge_moles"):
        fairchem_settings(str(bad), presets)
    with pytest.raises(ValueError, match="high-precision"):
        fairchem_settings("fast", presets)


@needs_fairchem
def test_fairchem_and_our_model_agree_on_the_same_checkpoint():
    template = cu3au_8()
    options = UmaOptions(task="omat")
    theirs = make_backend(SPEC, template, uma=options)
    ours = make_backend(str(UMA_S1P1), template, uma=options)
    assert theirs.unit.inference_settings.base_precision_dtype == torch.float32
    structures = perturbed(template, range(3))
    tol = tolerance("float32")
    for got, want in zip(theirs.compute(structures), ours.compute(structures)):
        assert abs(got.energy - want.energy) <= tol.energy_per_atom * len(template)
        np.testing.assert_allclose(got.forces, want.forces, rtol=0, atol=tol.forces)
        np.testing.assert_allclose(got.stress, want.stress, rtol=0, atol=tol.stress)


@needs_fairchem
def test_model_names_resolve_to_our_cache_files(tmp_path, monkeypatch):
    monkeypatch.setenv("UMADRIVE_CACHE", str(tmp_path))
    shutil.copy(UMA_S1P1, tmp_path / "uma-s-1p1.pt")
    backend = make_backend("fairchem:uma-s-1p1", cu3au_8(), uma=UmaOptions(task="omat"))
    assert backend.name == "fairchem:uma-s-1p1.pt (omat)"


@needs_fairchem
def test_a_fairchem_fall_back_is_logged(tmp_path, caplog):
    """fairchem's merged experts serve one composition; a unit merged for Cu3Au
    asked for Cu falls back to routed experts, and the backend says so."""
    mode = tmp_path / "merged.json"
    mode.write_text(json.dumps({"merge_mole": True}))
    alloy = make_backend(SPEC, cu3au_8(), uma=UmaOptions(task="omat", mode=str(mode)))
    assert alloy.unit.inference_settings.merge_mole and alloy.fallbacks == 0
    copper = bulk("Cu", "fcc", a=3.6, cubic=True)
    with caplog.at_level(logging.WARNING, logger="umadrive.driver"):
        backend = type(alloy)(alloy.unit, copper, task="omat", charge=0, spin=0, name="copper",
                              fairchem_data=(alloy._atomic_data, alloy._to_batch),
                              device=torch.device("cpu"))
    assert backend.fallbacks == 1 and not alloy.unit.inference_settings.merge_mole
    assert [r.getMessage() for r in caplog.records if "fell back" in r.getMessage()] != []
    ours = make_backend(str(UMA_S1P1), copper, uma=UmaOptions(task="omat"))
    structures = perturbed(copper, [5])
    tol = tolerance("float32")
    assert abs(backend.compute(structures)[0].energy - ours.compute(structures)[0].energy) <= (
        tol.energy_per_atom * len(copper))


# --- i-PI PIMD served by fairchem: ---------------------------------------------------


@needs_fairchem
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_pimd_served_by_fairchem_equals_direct_fairchem_calls(processes, tmp_path, socket_name,
                                                               test_env):
    structure = tmp_path / "alloy.extxyz"
    ase.io.write(structure, cu3au_8())
    run = IpiRun(structure=structure.name, unix=socket_name, ensemble="nvt", nbeads=NBEADS,
                 batch_size=4, steps=STEPS, temperature_k=600.0,
                 properties=("step", "bead_potentials"), trajectories=("positions", "forces"))
    ipi = processes.ipi(ipi_input_xml(run))
    serve = processes.serve("--model", SPEC, "--task", "omat",
                            "--mode", str(float64_mode(tmp_path)), "--structure", str(structure),
                            "--unix", socket_name, "--connections", "2",
                            "--batch-window", "2000", "--log-every", "1",
                            "--log-json", str(tmp_path / "serve.jsonl"), env=one_thread_env())
    assert processes.wait(ipi) == 0, processes.logs()
    assert processes.wait(serve) == 0, processes.logs()
    records = [json.loads(line) for line in (tmp_path / "serve.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["event"] == "status"]
    assert sum(r["structures"] for r in steps) == NBEADS * (STEPS + 1)
    # after the first step (connections still opening): all 8 beads in one predict call
    assert [r["structures"] for r in steps[-STEPS:]] == [NBEADS] * STEPS

    trajectories = [str(tmp_path / f"sim.positions_{b}.extxyz") for b in range(NBEADS)]
    subprocess.run([sys.executable, "-m", "tests.driver.direct_fairchem", str(UMA_S1P1), "omat",
                    str(tmp_path / "direct.json"), *trajectories], check=True, timeout=240,
                   env={**test_env, "OMP_NUM_THREADS": "1"})
    direct = json.loads((tmp_path / "direct.json").read_text())
    energies = np.array(direct["energies"])  # (bead, step) eV
    table = np.loadtxt(tmp_path / "sim.out", ndmin=2)
    assert table.shape == (STEPS + 1, 1 + NBEADS) and energies.shape == (NBEADS, STEPS + 1)
    tol = tolerance("printed")
    n_atoms = len(cu3au_8())
    for bead in range(NBEADS):
        served_forces = ase.io.read(tmp_path / f"sim.forces_{bead}.extxyz", index=":")
        for row in range(STEPS + 1):
            if row > 0:  # the beads have spread apart: answers in the wrong order would show
                assert len({round(e, 6) for e in energies[:, row]}) == NBEADS
            got = table[row, 1 + bead] * Hartree
            assert abs(got - energies[bead, row]) <= tol.energy_per_atom * n_atoms, (row, bead)
            np.testing.assert_allclose(served_forces[row].get_forces(),
                                       direct["forces"][bead][row], rtol=0, atol=tol.forces,
                                       err_msg=f"step {row}, bead {bead}")
