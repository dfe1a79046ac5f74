"""Single isolated atoms as fairchem 2.24 answers them: UMA 1.2+ through the network
(see test_uma12.py), UMA 1.0/1.1 from the isolated-atom energies file in the cache."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from umadrive.model import InferenceSettings, get_predict_unit
from umadrive.model.names import ISOLATED_ATOM_REFERENCES
from umadrive.model.predictor import System
from umadrive.model.single_atoms import IsolatedAtomError
from umadrive.structure import Structure

# The layout of facebook/UMA's references/iso_atom_elem_refs.yaml (values made up).
REFERENCES = """\
omat_elem_refs:
  8: -1.906366
  29: -0.2389113
omol_elem_refs:
  8:
    -1: -2043.7125
    0: -2043.5803342987
    1: -2043.0
"""


def _atom(z: int, task: str, charge: int = 0, spin: int = 0, cell=np.zeros((3, 3))) -> System:
    return System(numbers=np.array([z]), structure=Structure(
        positions=np.array([[0.3, 0.1, -0.2]]), cell=cell, pbc=np.zeros(3, bool)),
        task=task, charge=charge, spin=spin)


@pytest.fixture
def unit_1p1(uma_checkpoint_path, tmp_path, monkeypatch):
    for variable in ("FAIRCHEM_CACHE_DIR", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.setenv(variable, str(tmp_path / "empty"))
    monkeypatch.setenv("UMADRIVE_CACHE", str(tmp_path / "umadrive"))
    return get_predict_unit(uma_checkpoint_path("s1p1"),
                            inference_settings=InferenceSettings(base_precision_dtype=torch.float64))


def test_lone_atoms_of_a_1p1_model_come_from_the_references(unit_1p1, tmp_path, uma_cases):
    (tmp_path / "umadrive").mkdir()
    (tmp_path / "umadrive" / ISOLATED_ATOM_REFERENCES).write_text(REFERENCES)
    molecule = next(system for label, system, _ in uma_cases("s1p1") if label == "molecule")
    alone = unit_1p1.predict([molecule])[0]
    cation, copper, molecule_again, boxed = unit_1p1.predict([
        _atom(8, "omol", charge=1, spin=2), _atom(29, "omat"), molecule,
        _atom(8, "omat", cell=np.eye(3) * 10.0)])
    assert cation.energy == float(np.float32(-2043.0))
    assert copper.energy == float(np.float32(-0.2389113))
    assert boxed.energy == float(np.float32(-1.906366))
    for lone in (cation, copper, boxed):
        assert np.array_equal(lone.forces, np.zeros((1, 3)))
    assert cation.stress is None and np.array_equal(boxed.stress, np.zeros((3, 3)))
    assert molecule_again.energy == alone.energy
    np.testing.assert_array_equal(molecule_again.forces, alone.forces)
    with pytest.raises(IsolatedAtomError, match=r"no isolated-atom energy for Z=8 with charge 2"):
        unit_1p1.predict([_atom(8, "omol", charge=2)])
    with pytest.raises(IsolatedAtomError, match=r"no isolated-atom energies for task 'omc'"):
        unit_1p1.predict([_atom(8, "omc")])


def test_a_periodic_lone_atom_goes_through_the_network(unit_1p1):
    """fairchem uses the references only without periodic images."""
    periodic = dataclasses.replace(_atom(29, "omat"), structure=Structure(
        positions=np.array([[0.0, 0.0, 0.0]]), cell=np.eye(3) * 2.6, pbc=np.ones(3, bool)))
    assert np.isfinite(unit_1p1.predict([periodic])[0].energy)


def test_without_the_file_the_message_says_what_to_put_where(unit_1p1, tmp_path):
    with pytest.raises(IsolatedAtomError) as error:
        unit_1p1.predict([_atom(8, "omol")])
    message = str(error.value)
    assert f"references/{ISOLATED_ATOM_REFERENCES}" in message
    assert f"into {tmp_path / 'umadrive'}/" in message


def test_the_file_is_found_in_a_hub_snapshot(unit_1p1, tmp_path, monkeypatch):
    hub = tmp_path / "fairchem" / "models--facebook--UMA"
    (hub / "snapshots" / "abc" / "references").mkdir(parents=True)
    (hub / "snapshots" / "abc" / "references" / ISOLATED_ATOM_REFERENCES).write_text(REFERENCES)
    monkeypatch.setenv("FAIRCHEM_CACHE_DIR", str(tmp_path / "fairchem"))
    assert unit_1p1.predict([_atom(29, "omat")])[0].energy == float(np.float32(-0.2389113))
