"""Safe checkpoint reading: against what fairchem itself reads from a fairchem-written
file (``tools/make_checkpoint_fixture.py``), umadrive's own format, and hostile or
damaged files."""

from __future__ import annotations

import builtins
import json
import os
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from umadrive.model.checkpoint import (
    Checkpoint,
    CheckpointError,
    check_state_dict_keys,
    load_checkpoint,
    save_checkpoint,
)

DATA = Path(__file__).resolve().parents[1] / "data"
FAIRCHEM_CKPT = DATA / "ckpt_tiny_fairchem.pt"
REFERENCE = json.loads((DATA / "ckpt_tiny_fairchem.json").read_text())


@pytest.fixture(scope="module")
def fairchem_checkpoint() -> Checkpoint:
    return load_checkpoint(FAIRCHEM_CKPT)


def test_fairchem_configs_match_what_fairchem_reads(fairchem_checkpoint):
    assert fairchem_checkpoint.source == "fairchem"
    assert fairchem_checkpoint.model_config == REFERENCE["model_config"]
    assert len(fairchem_checkpoint.tasks_config) == len(REFERENCE["tasks"])
    for ours, theirs in zip(fairchem_checkpoint.tasks_config, REFERENCE["tasks"]):
        ours, theirs = dict(ours), dict(theirs)
        references = ours.pop("element_references")
        expected_references = theirs.pop("element_references")
        # The reference holds fairchem's float32 Normalizer buffers; ours are the
        # config's floats (fairchem uses those unrounded in float64 inference).
        ours["normalizer"] = {k: float(np.float32(v)) for k, v in ours["normalizer"].items()}
        assert ours == theirs
        if expected_references is None:
            assert references is None
        else:
            assert references.dtype == torch.float64
            assert references.tolist() == expected_references


def test_fairchem_ema_weights_match_what_fairchem_reads(fairchem_checkpoint):
    state_dict = fairchem_checkpoint.state_dict
    # The EMA keys without 'module.' and 'n_averaged' are exactly the keys of the
    # architecture fairchem builds from the config.
    assert sorted(state_dict) == REFERENCE["model_keys"]
    for key, expected in REFERENCE["state_dict"].items():
        tensor = state_dict[key]
        assert list(tensor.shape) == expected["shape"], key
        assert str(tensor.dtype).removeprefix("torch.") == expected["dtype"], key
        assert float(tensor.double().sum()) == pytest.approx(expected["sum"], rel=1e-12, abs=1e-12)
        if expected["first"] is not None:
            assert float(tensor.flatten()[0]) == expected["first"], key


def test_umadrive_format_round_trip(tmp_path, fairchem_checkpoint):
    path = tmp_path / "model.pt"
    save_checkpoint(path, fairchem_checkpoint)
    loaded = load_checkpoint(path)
    assert loaded.source == "umadrive"
    assert loaded.model_config == fairchem_checkpoint.model_config
    assert loaded.state_dict.keys() == fairchem_checkpoint.state_dict.keys()
    for key, tensor in fairchem_checkpoint.state_dict.items():
        assert torch.equal(loaded.state_dict[key], tensor), key
        assert loaded.state_dict[key].dtype == tensor.dtype
    for ours, theirs in zip(loaded.tasks_config, fairchem_checkpoint.tasks_config):
        assert ours.keys() == theirs.keys()
        for key, value in theirs.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(ours[key], value)
            else:
                assert ours[key] == value
    # Loadable by torch's code-free loader: nothing but tensors, strings, numbers, dicts.
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "umadrive-checkpoint" and raw["version"] == 1


class _RunsCommand:
    """Unpickling this runs a shell command: the classic malicious pickle."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "umadrive-checkpoint", "payload": _RunsCommand(f"touch {marker}")}, path)

    with pytest.raises(CheckpointError, match=r"global (posix|nt|os)\.system"):
        load_checkpoint(path)
    assert not marker.exists()

    # The file is a working exploit: an unrestricted load does run the command.
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("name", ["eval", "exec", "getattr", "__import__"])
def test_dangerous_builtins_are_refused(tmp_path, name):
    path = tmp_path / "evil.pt"

    class Calls:
        def __reduce__(self):
            return (getattr(builtins, name), ("1",))

    torch.save([Calls()], path)
    with pytest.raises(CheckpointError, match=rf"global (__builtin__|builtins)\.{name}\b"):
        load_checkpoint(path)


def test_truncated_file(tmp_path):
    data = FAIRCHEM_CKPT.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt.*download it again"):
        load_checkpoint(path)


def test_not_a_zip(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="notes.pt.*torch zip file"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        load_checkpoint(tmp_path / "absent.pt")


def test_storage_larger_than_file_is_refused(tmp_path):
    """A zip entry header claiming more bytes than the file holds is not trusted."""
    path = tmp_path / "lying.pt"
    torch.save({"format": "umadrive-checkpoint", "w": torch.zeros(4)}, path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        name = next(i.filename for i in archive.infolist() if "/data/" in i.filename).encode()
    # Patch the uncompressed size (offset 24) in that entry's central directory record.
    record = data.index(b"PK\x01\x02")
    while data[record + 46 : record + 46 + len(name)] != name:
        record = data.index(b"PK\x01\x02", record + 4)
    data[record + 24 : record + 28] = (2**32 - 1).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="lying.pt"):
        load_checkpoint(path)


def test_other_torch_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="neither a fairchem inference checkpoint nor a umadrive"):
        load_checkpoint(path)


def test_newer_umadrive_format_is_refused(tmp_path, fairchem_checkpoint):
    path = tmp_path / "future.pt"
    save_checkpoint(path, fairchem_checkpoint)
    raw = torch.load(path, weights_only=True)
    raw["version"] = 99
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="format version 99.*reads version 1"):
        load_checkpoint(path)


@pytest.fixture
def fake_fairchem(monkeypatch):
    """Fault injection: stand-in fairchem/OmegaConf classes under their real import
    names, so tests can pickle checkpoints with contents fairchem would not write."""

    def module(name: str, **classes: type) -> None:
        parts = name.split(".")
        for depth in range(1, len(parts)):
            parent = ".".join(parts[:depth])
            if parent not in sys.modules:
                monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
        mod = types.ModuleType(name)
        for class_name, cls in classes.items():
            cls.__module__, cls.__qualname__, cls.__name__ = name, class_name, class_name
            setattr(mod, class_name, cls)
        monkeypatch.setitem(sys.modules, name, mod)

    class MLIPInferenceCheckpoint:
        def __init__(self, **fields):
            self.__dict__.update(fields)

    class DictConfig:
        def __init__(self, content):
            self._content = content
            self._parent = None

    class AnyNode:
        def __init__(self, value):
            self._val = value
            self._parent = None

    module("fairchem.core.units.mlip_unit.api.inference", MLIPInferenceCheckpoint=MLIPInferenceCheckpoint)
    module("omegaconf.dictconfig", DictConfig=DictConfig)
    module("omegaconf.nodes", AnyNode=AnyNode)
    return types.SimpleNamespace(Checkpoint=MLIPInferenceCheckpoint, DictConfig=DictConfig, AnyNode=AnyNode)


def _task(**overrides) -> dict:
    task = {"name": "omat_energy", "level": "system", "property": "energy", "datasets": ["omat"]}
    return {**task, **overrides}


def test_unresolved_interpolation_is_refused(tmp_path, fake_fairchem):
    config = fake_fairchem.DictConfig({"backbone": fake_fairchem.DictConfig(
        {"cutoff": fake_fairchem.AnyNode("${cutoff}")})})
    path = tmp_path / "interp.pt"
    torch.save(fake_fairchem.Checkpoint(model_config=config, ema_state_dict={}, tasks_config=[_task()]), path)
    with pytest.raises(CheckpointError, match=r"model_config\.backbone\.cutoff.*\$\{cutoff\}.*OmegaConf\.resolve"):
        load_checkpoint(path)


def test_missing_fields_are_named(tmp_path, fake_fairchem):
    path = tmp_path / "partial.pt"
    torch.save(fake_fairchem.Checkpoint(model_config={}, tasks_config=[]), path)
    with pytest.raises(CheckpointError, match="lacks ema_state_dict"):
        load_checkpoint(path)


def test_task_defaults_and_tensor_references(tmp_path, fake_fairchem):
    """Normalizer defaults are fairchem's (mean 0, rmsd 1); references may be a tensor."""
    references = torch.linspace(-1.0, 1.0, 101, dtype=torch.float64)
    tasks = [_task(element_references={"element_references": references}), _task(name="omat_forces")]
    path = tmp_path / "tasks.pt"
    torch.save(fake_fairchem.Checkpoint(
        model_config={"backbone": {}}, ema_state_dict={"module.w": torch.ones(2), "n_averaged": torch.tensor(1)},
        tasks_config=tasks), path)
    loaded = load_checkpoint(path)
    assert loaded.state_dict.keys() == {"w"}
    assert loaded.tasks_config[0]["normalizer"] == {"mean": 0.0, "rmsd": 1.0}
    assert torch.equal(loaded.tasks_config[0]["element_references"], references)
    assert loaded.tasks_config[1]["element_references"] is None


def test_task_without_required_keys(tmp_path, fake_fairchem):
    path = tmp_path / "badtask.pt"
    torch.save(fake_fairchem.Checkpoint(model_config={}, ema_state_dict={}, tasks_config=[{"name": "x"}]), path)
    with pytest.raises(CheckpointError, match="task config needs the keys name, level, property, datasets"):
        load_checkpoint(path)


def test_check_state_dict_keys_lists_missing_and_unexpected():
    check_state_dict_keys(["a", "b"], ["b", "a"])
    with pytest.raises(CheckpointError, match=r"missing 1 weight\(s\): a; unexpected 2 weight\(s\): c, d"):
        check_state_dict_keys(["a", "b"], ["b", "d", "c"])
    many = [f"w{i:03d}" for i in range(30)]
    with pytest.raises(CheckpointError, match=r"missing 30 weight\(s\): w000, .*w019, … and 10 more"):
        check_state_dict_keys(many, [])
