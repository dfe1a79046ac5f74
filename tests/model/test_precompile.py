"""The precompiled message passing in the kernel cache: a warm-up with a cache
precompiles (torch's ``aot_compile``) and stores the result; a later warm-up
loads it without tracing (torch's counters: no frame, no AOTAutograd graph) and
answers as the uncompiled unit does, for batches, atom and edge counts it was
not traced with and for experts merged again for another composition (the
weights are read at each call, not baked in). An entry torch cannot load, or a
damaged one, is replaced by a new precompile, never used.

Uses torch.compile's ``aot_eager`` backend (dynamo and AOTAutograd as with
inductor, no code generation); inductor's are in ``test_compile_inductor.py``.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest
import torch

from umadrive.model import InferenceSettings, get_predict_unit
from umadrive.model.compile_cache import KernelCache, KernelKey
from umadrive.model.uma import RunOptions
from umadrive.testing import tolerance

from tests.model.helpers import checkpoint_path, rattled

#: turbo without the CUDA-only settings
TURBO_CPU = dict(activation_checkpointing=False, merge_mole=True, compile=True)
BACKEND = "aot_eager"


def _unit(compile: bool = True):
    settings = {**TURBO_CPU, "compile": compile}
    return get_predict_unit(checkpoint_path("s1p1"), compile_backend=BACKEND,
                            inference_settings=InferenceSettings(
                                base_precision_dtype=torch.float32, **settings))


def _traced() -> tuple[int, int]:
    """Frames dynamo traced and graphs AOTAutograd built so far in this process."""
    counters = torch._dynamo.utils.counters
    return counters["frames"]["total"], counters["aot_autograd"]["total"]


def _assert_close(got, expected, label=""):
    tol = tolerance(torch.float32)
    assert len(got) == len(expected), label
    for index, (a, b) in enumerate(zip(got, expected)):
        where = f"{label} system {index}"
        assert abs(a.energy - b.energy) / len(a.forces) <= tol.energy_per_atom, where
        np.testing.assert_allclose(a.forces, b.forces, rtol=0, atol=tol.forces, err_msg=where)
        np.testing.assert_allclose(a.stress, b.stress, rtol=0, atol=tol.stress, err_msg=where)


def _key(unit) -> KernelKey:
    return KernelKey.of(unit.model, unit.settings.as_dict(), unit.device, BACKEND)


@pytest.fixture(scope="module")
def filled(tmp_path_factory, uma_cases):
    """A cache holding the model precompiled on the triclinic alloy (4 atoms)."""
    torch._dynamo.reset()
    cache = KernelCache(tmp_path_factory.mktemp("cache"))
    system = dict((label, system) for label, system, _ in uma_cases("s1p1"))["triclinic_alloy"]
    cold = _unit().warm_up([system], cache=cache)
    assert cold.stored and not cold.cache_hit and cold.ran_compiled, cold.summary()
    assert "cached for next time in" in cold.summary()
    return cache, system


def test_a_warm_start_loads_without_tracing_and_fits_any_batch(filled, uma_cases):
    """The second unit loads the stored function; batches of 1..3 rattled copies
    of the alloy and of a 32-atom copper cell (other atom and edge counts, the
    experts merged again) trace nothing and agree with the uncompiled unit."""
    cache, system = filled
    cases = dict((label, system) for label, system, _ in uma_cases("s1p1"))
    eager = _unit(compile=False)
    before = _traced()
    warm = _unit()
    warm_up = warm.warm_up([system], cache=cache)
    assert warm_up.cache_hit and not warm_up.stored, warm_up.summary()
    assert "loaded from the cache" in warm_up.summary()
    assert not warm_up.ran_compiled  # its first call is the first prediction's
    edges, atoms = set(), set()
    with torch.compiler.set_stance("fail_on_recompile"):
        for label, size in [("triclinic_alloy", 1), ("triclinic_alloy", 3),
                            ("over_max_neighbors", 2), ("triclinic_alloy", 2)]:
            systems = [rattled(cases[label], 0.1, seed) for seed in range(size)]
            batch = warm.batch(systems)
            edges.add(int(warm.graph(batch).edge_index.shape[1]))
            atoms.add(int(batch.numbers.shape[0]))
            _assert_close(warm.predict(systems), eager.predict(systems), f"{label} x{size}")
    assert _traced() == before
    assert len(edges) == len(atoms) == 4
    assert warm.stats.merges == 3


def test_a_loaded_function_uses_the_weights_merged_now(filled, uma_cases):
    """Loaded for the alloy, the function answers for silicon (another
    composition: the merged expert weights are replaced) as the uncompiled unit
    does, without tracing. The alloy's weights would give silicon other answers
    (checked), so they cannot be baked into the loaded function."""
    cache, system = filled
    silicon = dict((label, system) for label, system, _ in uma_cases("s1p1"))[
        "primitive_2_atoms"]
    steps = [rattled(silicon, 0.05, seed) for seed in range(2)]
    eager = _unit(compile=False)
    expected = eager.predict(steps)

    stale = _unit(compile=False)
    stale.predict([system])  # merged for the alloy
    atoms = stale.batch(steps)
    with_alloy_weights = stale.model(atoms, stale.graph(atoms), run=RunOptions(merged=True))
    tol = tolerance(torch.float32)
    assert abs(float(with_alloy_weights.energy[0]) - expected[0].energy) / 2 \
        > 100 * tol.energy_per_atom

    warm = _unit()
    assert warm.warm_up([system], cache=cache).cache_hit
    merges = warm.stats.merges
    before = _traced()
    _assert_close(warm.predict(steps), expected, "silicon after the alloy")
    assert warm.stats.merges == merges + 1 and _traced() == before
    _assert_close(warm.predict([system]), eager.predict([system]), "the alloy again")


@pytest.mark.parametrize("damage", ["payload torch refuses", "flipped byte"])
def test_an_entry_that_does_not_load_is_rebuilt_never_used(filled, tmp_path, caplog, damage):
    cache, system = filled
    good = cache.load(_key(_unit()))
    broken = KernelCache(tmp_path)
    unit = _unit()
    path = broken.store(_key(unit), b"not a compiled function" if damage.startswith("payload")
                        else good)
    if damage == "flipped byte":
        data = path.read_bytes()
        path.write_bytes(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    with caplog.at_level(logging.WARNING, logger="umadrive.model"):
        warm_up = unit.warm_up([system], cache=broken)
    assert not warm_up.cache_hit and warm_up.stored, warm_up.summary()
    expected = ("could not be loaded" if damage.startswith("payload")
                else "payload checksum mismatch")
    assert expected in caplog.text and str(path) in caplog.text
    _assert_close(unit.predict([system]), _unit(compile=False).predict([system]))
    # the rebuilt entry loads
    assert _unit().warm_up([system], cache=broken).cache_hit


class _CrashingKernels:
    """Stands in for a loaded precompiled function: its guards accept what the
    real one's accept, its call fails (as kernels built for another machine
    might)."""

    def __init__(self, loaded) -> None:
        self._loaded = loaded
        self.calls = 0

    def guard_check(self, *inputs) -> bool:
        return self._loaded.guard_check(*inputs)

    def __call__(self, *inputs):
        self.calls += 1
        raise RuntimeError("loaded kernels crashed (test)")


def test_loaded_code_that_fails_on_its_first_call_answers_uncompiled(filled, caplog):
    """The warm-up does not run code it loaded; if that code fails on the first
    real call, the step is answered uncompiled (nothing lost), with one error
    line, and later steps stay uncompiled."""
    cache, system = filled
    unit = _unit()
    assert unit.warm_up([system], cache=cache).cache_hit
    crashing = _CrashingKernels(unit._compiled._precompiled)
    unit._compiled._precompiled = crashing
    eager = _unit(compile=False)
    steps = [rattled(system, 0.05, seed) for seed in range(2)]
    with caplog.at_level(logging.ERROR, logger="umadrive.model.predictor"):
        for step in steps:
            _assert_close(unit.predict([step]), eager.predict([step]), "after the crash")
    assert crashing.calls == 1
    assert caplog.text.count("failed on its first call") == 1
    assert "loaded kernels crashed (test)" in caplog.text


def test_a_background_warm_up_waits_for_the_first_answer(filled):
    """A background warm-up started while the unit computes its first answer
    does nothing (not even hashing the model for its cache key) until that
    answer is done; then it loads the entry and the next call runs compiled."""
    cache, system = filled
    unit = _unit()
    generate = unit.graph_generator
    answering, release = threading.Event(), threading.Event()
    answerer = threading.current_thread()

    def held_graph(*args, **kwargs):
        if threading.current_thread() is not answerer:  # the first answer's thread
            answering.set()
            release.wait(timeout=300)
        return generate(*args, **kwargs)

    unit.graph_generator = held_graph
    first: list = []
    thread = threading.Thread(target=lambda: first.extend(unit.predict([system])))
    thread.start()
    try:
        assert answering.wait(timeout=300)
        warm_up = unit.warm_up([system], background=True, cache=cache)
        time.sleep(0.5)
        assert not warm_up.done and warm_up.cache_path is None
    finally:
        release.set()
        thread.join(timeout=300)
    assert warm_up.wait(timeout=300) and warm_up.cache_hit, warm_up.summary()
    expected = _unit(compile=False).predict([system])
    _assert_close(first, expected, "first answer")
    _assert_close(unit.predict([system]), expected, "compiled")
    assert unit.stats.uncompiled_calls == 1


def test_a_call_the_guards_refuse_compiles_just_in_time(filled, uma_cases, caplog):
    """A batch mixing compositions runs with routed experts, which the function
    precompiled for merged ones does not take: one log line says why, the call
    is compiled just in time and answers as the uncompiled unit does."""
    cache, system = filled
    silicon = dict((label, system) for label, system, _ in uma_cases("s1p1"))[
        "primitive_2_atoms"]
    warm = _unit()
    assert warm.warm_up([system], cache=cache).cache_hit
    mixed = [system, silicon]
    before = _traced()
    with caplog.at_level(logging.INFO, logger="umadrive.model.compiling"):
        got = warm.predict(mixed)
        warm.predict(mixed)
    assert warm.stats.routed_calls == 2 and _traced() != before
    assert caplog.text.count("the precompiled model does not fit this call") == 1
    assert "routing" in caplog.text
    _assert_close(got, _unit(compile=False).predict(mixed), "mixed batch")


def test_a_cache_that_cannot_be_written_leaves_the_model_compiled(filled, tmp_path, caplog):
    """A cache folder that is a file (so nothing can be written under it): one
    warning, nothing stored, and the unit answers compiled all the same."""
    _, system = filled
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    unit = _unit()
    with caplog.at_level(logging.WARNING, logger="umadrive.model.compiling"):
        warm_up = unit.warm_up([system], cache=KernelCache(blocked / "compiled"))
    assert warm_up.succeeded and not warm_up.stored and not warm_up.cache_hit
    assert "could not be stored in" in caplog.text and "not cached" in warm_up.summary()
    before = _traced()
    _assert_close(unit.predict([system]), _unit(compile=False).predict([system]))
    assert _traced() == before  # the precompiled function answered


def test_a_missing_entry_is_filled_by_the_helper_then_loaded(tmp_path, uma_cases):
    """fill_cache runs on a miss (here another unit storing the entry, as the
    helper process does); the warm-up then loads that entry instead of
    precompiling. A helper that leaves the entry missing: precompiled here."""
    system = dict((label, system) for label, system, _ in uma_cases("s1p1"))["triclinic_alloy"]
    cache = KernelCache(tmp_path / "filled")
    calls = []

    def fill() -> None:
        calls.append("fill")
        assert _unit().warm_up([system], cache=cache).stored

    unit = _unit()
    warm_up = unit.warm_up([system], cache=cache, fill_cache=fill)
    assert calls == ["fill"] and warm_up.cache_hit and not warm_up.stored, warm_up.summary()
    _assert_close(unit.predict([system]), _unit(compile=False).predict([system]))
    # a later miss-free warm-up does not call the helper
    assert _unit().warm_up([system], cache=cache, fill_cache=fill).cache_hit
    assert calls == ["fill"]

    empty = KernelCache(tmp_path / "empty")
    alone = _unit().warm_up([system], cache=empty, fill_cache=lambda: None)
    assert not alone.cache_hit and alone.stored, alone.summary()


def test_a_helper_needs_a_cache(uma_cases):
    _, system, _ = uma_cases("s1p1")[0]
    with pytest.raises(ValueError, match="fill_cache needs a cache"):
        _unit().warm_up([system], fill_cache=lambda: None)
