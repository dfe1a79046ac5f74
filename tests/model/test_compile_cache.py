"""The compiled-kernel cache: keys follow what makes kernels valid, entries are
written atomically, damaged or stale entries are refused and removed, and
concurrent writers and readers in separate processes never see a torn entry."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
from pathlib import Path

import pytest
import torch

import umadrive.model
from umadrive.model import InferenceSettings
from umadrive.model.compile_cache import (KernelCache, KernelKey, code_digest, default_folder,
                                          model_digest)

from tests.model.helpers import predict_unit


def _key(unit, settings: InferenceSettings | None = None, backend: str = "inductor"):
    settings = settings or unit.settings
    return KernelKey.of(unit.model, settings.as_dict(), unit.device, backend)


def test_the_key_changes_with_everything_kernels_depend_on():
    unit = predict_unit("s1p1")
    key = _key(unit)
    assert key == _key(unit)
    others = {
        "another checkpoint": _key(predict_unit("s1p0")),
        "another dtype": _key(predict_unit("s1p1", torch.float32)),
        "other settings": _key(unit, InferenceSettings(merge_mole=True, compile=True,
                                                       base_precision_dtype=torch.float64)),
        "another backend": _key(unit, backend="aot_eager"),
        "another torch": dataclasses.replace(key, torch="0.0.0"),
        "other model code": dataclasses.replace(key, code_sha256="0" * 64),
        "another device": dataclasses.replace(key, device="cuda", capability="sm_90"),
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        others["another CPU thread count"] = _key(unit)
    finally:
        torch.set_num_threads(threads)
    names = {label: other.file_name() for label, other in others.items()}
    assert key.file_name() not in names.values()
    assert len(set(names.values())) == len(names)


def test_the_code_digest_covers_the_model_code(tmp_path):
    """Another version of any model module (the precompiled payload holds its
    bytecode) makes another key."""
    source = Path(umadrive.model.__file__).parent
    for path in source.glob("*.py"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    assert code_digest(tmp_path) == code_digest()
    escn = tmp_path / "escn.py"
    escn.write_text(escn.read_text().replace("dtype = edge_vectors.dtype",
                                             "dtype = edge_vectors.dtype  # edited", 1))
    assert code_digest(tmp_path) != code_digest()


def test_the_model_digest_covers_the_weights():
    model = predict_unit("s1p1").model
    before = model_digest(model)
    parameter = next(model.parameters())
    saved = parameter.detach().clone()
    try:
        with torch.no_grad():
            parameter.view(-1)[0] += 1e-6
        assert model_digest(model) != before
    finally:
        with torch.no_grad():
            parameter.copy_(saved)
    assert model_digest(model) == before


def test_the_default_folder_is_under_umadrive_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UMADRIVE_CACHE", str(tmp_path))
    assert default_folder() == tmp_path / "compiled"
    assert KernelCache().folder == tmp_path / "compiled"


def test_an_entry_round_trips_and_leaves_no_temporary_file(tmp_path):
    cache = KernelCache(tmp_path / "kernels")
    key = _key(predict_unit("s1p1"))
    assert cache.load(key) is None
    payload = os.urandom(10_000)
    path = cache.store(key, payload)
    assert path == cache.path(key) and path.parent == tmp_path / "kernels"
    assert cache.load(key) == payload
    assert sorted(p.name for p in cache.folder.iterdir()) == [path.name]
    cache.store(key, b"newer")
    assert cache.load(key) == b"newer"


def _damage(path, how: str, other_key: KernelKey, cache: KernelCache) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[:-100])
    elif how == "flipped byte":
        middle = len(data) - 50
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1:])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "not an entry":
        path.write_bytes(b"\x80\x04garbage" * 10)
    elif how == "damaged header":
        path.write_bytes(data.replace(b'"sha256"', b'"sha2S6"', 1))
    elif how == "stale (another key)":
        # an entry written for another key, found under this key's name
        other = KernelCache(path.parent / "other")
        path.write_bytes(other.store(other_key, b"x" * 1000).read_bytes())
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "flipped byte", "empty", "not an entry",
                                 "damaged header", "stale (another key)"])
def test_a_damaged_or_stale_entry_is_refused_removed_and_rebuilt(tmp_path, caplog, how):
    cache = KernelCache(tmp_path)
    unit = predict_unit("s1p1")
    key = _key(unit)
    path = cache.store(key, os.urandom(5000))
    _damage(path, how, dataclasses.replace(key, torch="0.0.0"), cache)
    with caplog.at_level(logging.WARNING, logger="umadrive.model.compile_cache"):
        assert cache.load(key) is None
    assert not path.exists()
    assert str(path) in caplog.text and "unusable" in caplog.text
    cache.store(key, b"rebuilt")
    assert cache.load(key) == b"rebuilt"


def _hammer(folder: str, key_json: dict, writer: int, rounds: int, queue) -> None:
    """Writes entries of one key, of different sizes, and reads between writes."""
    cache = KernelCache(folder)
    key = KernelKey(**key_json)
    seen_bad = 0
    for round_ in range(rounds):
        size = 1000 + 97_000 * ((writer + round_) % 3)
        cache.store(key, bytes([writer]) * size)
        payload = cache.load(key)
        # a reader sees one writer's whole payload, never a mix or a cut
        if payload is None or len(set(payload)) != 1 or len(payload) % 1000:
            seen_bad += 1
    queue.put(seen_bad)


def test_concurrent_writers_and_readers_of_one_entry(tmp_path, caplog):
    """4 processes write and read the same entry 30 times each: every read is one
    whole payload, no warning about damage, and no temporary file stays."""
    key = _key(predict_unit("s1p1"))
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_hammer, args=(str(tmp_path), dataclasses.asdict(key),
                                                     writer, 30, queue))
               for writer in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=240)
        assert worker.exitcode == 0
    assert [queue.get(timeout=10) for _ in workers] == [0, 0, 0, 0]
    assert [p.name for p in tmp_path.iterdir()] == [KernelCache(tmp_path).path(key).name]
