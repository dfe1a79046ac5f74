"""Model-name resolution with fake cache directories."""

from __future__ import annotations

import os
import time

import pytest

from umadrive.model import names
from umadrive.model.names import KNOWN_MODELS, ModelNotFoundError, resolve_model

CACHE_VARIABLES = (
    "UMADRIVE_CACHE", "FAIRCHEM_CACHE_DIR", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME",
)


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Every cache pointed into tmp_path, and no download attempts."""
    for variable in CACHE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("UMADRIVE_CACHE", str(tmp_path / "umadrive"))
    monkeypatch.setenv("FAIRCHEM_CACHE_DIR", str(tmp_path / "fairchem"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def _write(path, content=b"checkpoint"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _snapshot(hub, revision, filename="uma-s-1p1.pt"):
    return _write(hub / "models--facebook--UMA" / "snapshots" / revision / "checkpoints" / filename)


def test_existing_path_is_returned_as_is(caches):
    checkpoint = _write(caches / "elsewhere" / "my-finetune.pt")
    assert resolve_model(checkpoint) == checkpoint
    assert resolve_model(str(checkpoint)) == checkpoint


@pytest.mark.parametrize("name", KNOWN_MODELS)
def test_name_in_umadrive_cache(caches, name):
    checkpoint = _write(caches / "umadrive" / KNOWN_MODELS[name])
    assert resolve_model(name) == checkpoint


def test_umadrive_cache_defaults_to_home(caches, monkeypatch):
    monkeypatch.delenv("UMADRIVE_CACHE")
    checkpoint = _write(caches / "home" / ".cache" / "umadrive" / "uma-m-1p1.pt")
    assert resolve_model("uma-m-1p1") == checkpoint


def test_umadrive_cache_comes_first(caches):
    _snapshot(caches / "fairchem", "abc")
    ours = _write(caches / "umadrive" / "uma-s-1p1.pt")
    assert resolve_model("uma-s-1p1") == ours


def test_fairchem_cache(caches):
    expected = _snapshot(caches / "fairchem", "abc")
    assert resolve_model("uma-s-1p1") == expected


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"])
def test_huggingface_hub_cache_variables(caches, monkeypatch, variable):
    monkeypatch.setenv(variable, str(caches / "hubcache"))
    expected = _snapshot(caches / "hubcache", "abc")
    assert resolve_model("uma-s-1p1") == expected


def test_huggingface_home(caches):
    expected = _snapshot(caches / "hf" / "hub", "abc")
    assert resolve_model("uma-s-1p1") == expected


def test_huggingface_default_location(caches, monkeypatch):
    monkeypatch.delenv("HF_HOME")
    expected = _snapshot(caches / "home" / ".cache" / "huggingface" / "hub", "abc")
    assert resolve_model("uma-s-1p1") == expected


def test_snapshot_named_by_refs_main_wins(caches):
    hub = caches / "hf" / "hub"
    current = _snapshot(hub, "aaa")
    newer = _snapshot(hub, "bbb")
    os.utime(newer.parent.parent, (time.time() + 100, time.time() + 100))
    assert resolve_model("uma-s-1p1") == newer  # newest snapshot without refs
    _write(hub / "models--facebook--UMA" / "refs" / "main", b"aaa\n")
    assert resolve_model("uma-s-1p1") == current


def test_missing_known_model_says_which_file_to_put_where(caches):
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model("uma-s-1p1")
    message = str(error.value)
    assert "Put uma-s-1p1.pt (from https://huggingface.co/facebook/UMA, file checkpoints/uma-s-1p1.pt" in message
    assert f"into {caches / 'umadrive'}/" in message
    assert "HF_HUB_OFFLINE is set" in message
    assert str(caches / "umadrive" / "uma-s-1p1.pt") in message
    assert isinstance(error.value, FileNotFoundError)


def test_download_is_skipped_without_huggingface_hub(caches, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", None)  # not importable
    with pytest.raises(ModelNotFoundError, match="huggingface_hub is not installed"):
        resolve_model("uma-m-1p1")


def test_missing_path(caches):
    with pytest.raises(ModelNotFoundError, match=r"no such file: '.*nope\.pt'.*one of the model names"):
        resolve_model(caches / "nope.pt")
    with pytest.raises(ModelNotFoundError, match=r"no such file: 'models/uma'"):
        resolve_model("models/uma")


def test_unknown_name(caches):
    with pytest.raises(ModelNotFoundError, match=r"'uma-x' is neither a checkpoint file nor a known"):
        resolve_model("uma-x")


@pytest.mark.parametrize("name", KNOWN_MODELS)
def test_name_with_pt(caches, name):
    checkpoint = _write(caches / "umadrive" / KNOWN_MODELS[name])
    assert resolve_model(name + ".pt") == checkpoint


def test_bundled_models_table(caches, monkeypatch):
    bundled = _write(caches / "package" / "demo.pt")
    monkeypatch.setitem(names.BUNDLED_MODELS, "demo", bundled)
    assert resolve_model("demo") == bundled
