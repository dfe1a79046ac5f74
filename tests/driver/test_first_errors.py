"""The errors a newcomer meets first name the flag, the value, the limit and the fix."""

from __future__ import annotations

import os

import ase.io
import pytest

from tests.reference import UMA_S1P1, sheared_copper
from umadrive.ipi_input import IpiRun, ipi_input_xml


def test_missing_structure_names_the_flag(processes, tmp_path):
    serve = processes.serve("--model", "ase:emt", "--structure", "nope.xyz", "--unix", "x")
    assert processes.wait(serve) == 2
    assert "--structure 'nope.xyz': no such file; give a structure file" in \
        processes.output(serve)


def test_unreadable_structure_names_the_flag(processes, tmp_path):
    (tmp_path / "bad.xyz").write_text("not a structure\n")
    serve = processes.serve("--model", "ase:emt", "--structure", "bad.xyz", "--unix", "x")
    assert processes.wait(serve) == 2
    assert "--structure 'bad.xyz': ase.io.read could not read it" in processes.output(serve)


@pytest.mark.timeout(120)
def test_model_name_with_pt_is_found_in_the_cache(processes, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "uma-s-1p1.pt").symlink_to(UMA_S1P1)
    ase.io.write(tmp_path / "start.extxyz", sheared_copper())
    serve = processes.serve("--model", "uma-s-1p1.pt", "--task", "omat", "--structure",
                            "start.extxyz", "--unix", processes.socket("pt"),
                            "--connect-timeout", "0.5",
                            env={**os.environ, "UMADRIVE_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    processes.wait(serve)
    assert "model uma-s-1p1.pt (omat) ready" in processes.output(serve), processes.logs()


def test_missing_model_path_says_no_such_file(processes, tmp_path):
    ase.io.write(tmp_path / "start.extxyz", sheared_copper())
    serve = processes.serve("--model", "models/uma.pt", "--structure", "start.extxyz",
                            "--unix", "x")
    assert processes.wait(serve) == 2
    assert "--model 'models/uma.pt': no such file: 'models/uma.pt'" in processes.output(serve)


@pytest.mark.timeout(120)
def test_max_atoms_of_a_batch_names_the_flag_and_its_value(processes, tmp_path, socket_name):
    """Real i-PI sends 4 structures of 32 atoms in one batched POSDATA; --max-atoms 50
    caps the batch's atoms, so nat may be at most 12."""
    ase.io.write(tmp_path / "start.extxyz", sheared_copper())
    run = IpiRun(structure="start.extxyz", steps=2, unix=socket_name, nbeads=4, batch_size=4)
    processes.ipi(ipi_input_xml(run))
    serve = processes.serve("--model", "ase:emt", "--structure", "start.extxyz", "--unix",
                            socket_name, "--max-atoms", "50")
    assert processes.wait(serve) == 1
    output = processes.output(serve)
    assert ("batched POSDATA atom count nat (4 structures x nat atoms <= --max-atoms 50) "
            "in [0, 12]") in output, output
    assert "--max-atoms >= 4 x nat), received 32" in output, output
