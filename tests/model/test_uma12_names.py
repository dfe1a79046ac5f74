"""The UMA 1.2.x names resolve like the others (cache folder, hub snapshots)."""

from __future__ import annotations

import shutil

import pytest

from umadrive.model import get_predict_unit
from umadrive.model.names import KNOWN_MODELS, ModelNotFoundError, resolve_model

NAMES_1P2 = ("uma-s-1p2", "uma-s-1p2p1", "uma-s-1p2p1-ft-d4rev", "uma-s-1p2p1-ft-r2scan")


@pytest.fixture
def caches(tmp_path, monkeypatch):
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("UMADRIVE_CACHE", str(tmp_path / "umadrive"))
    monkeypatch.setenv("FAIRCHEM_CACHE_DIR", str(tmp_path / "fairchem"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.mark.parametrize("name", NAMES_1P2)
def test_names_resolve_from_a_hub_snapshot(caches, name):
    assert KNOWN_MODELS[name] == f"{name}.pt"
    snapshot = caches / "hf" / "hub" / "models--facebook--UMA" / "snapshots" / "rev"
    path = snapshot / "checkpoints" / f"{name}.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"checkpoint")
    assert resolve_model(name) == path


@pytest.mark.parametrize("name", NAMES_1P2)
def test_missing_names_say_which_file(caches, name):
    with pytest.raises(ModelNotFoundError, match=rf"Put {name}\.pt \(from https://huggingface"):
        resolve_model(name)


def test_the_default_model_name_loads_a_1p2p1_file(caches, uma_checkpoint_path):
    (caches / "umadrive").mkdir()
    shutil.copy(uma_checkpoint_path("s1p2p1"), caches / "umadrive" / "uma-s-1p2p1.pt")
    unit = get_predict_unit("uma-s-1p2p1")
    assert unit.model.config.version == "1.2.1" and "oc25" in unit.datasets
