"""Compile without waiting and without recompiling: one warm-up serves batches of
any number of systems, atom counts and edge counts (torch fails on any
recompile); a background warm-up answers uncompiled first and then switches,
with the same answers; a failed compile leaves the unit answering uncompiled.

The recompile test uses torch.compile's ``aot_eager`` backend (dynamo and
AOTAutograd trace forward and backward as with inductor, without generating
code); the others a backend that runs dynamo's graph as it is. Inductor's code
generation and the kernel cache across processes are in
``test_compile_inductor.py``.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import torch

from umadrive.model import InferenceSettings, get_predict_unit
from umadrive.model.settings import InferenceSettingsError
from umadrive.testing import tolerance

from tests.model.helpers import checkpoint_path, rattled

#: turbo without the CUDA-only settings
TURBO_CPU = dict(activation_checkpointing=False, merge_mole=True, compile=True)
F32 = torch.float32


def _unit(settings: dict, dtype=F32, **kwargs):
    return get_predict_unit(checkpoint_path("s1p1"), inference_settings=InferenceSettings(
        base_precision_dtype=dtype, **settings), **kwargs)


def _assert_close(got, expected, dtype=F32, label=""):
    tol = tolerance(dtype)
    assert len(got) == len(expected), label
    for index, (a, b) in enumerate(zip(got, expected)):
        where = f"{label} system {index}"
        assert abs(a.energy - b.energy) / len(a.forces) <= tol.energy_per_atom, where
        np.testing.assert_allclose(a.forces, b.forces, rtol=0, atol=tol.forces, err_msg=where)
        if b.stress is None:
            assert a.stress is None, where
        else:
            np.testing.assert_allclose(a.stress, b.stress, rtol=0, atol=tol.stress,
                                       err_msg=where)


class _GatedBackend:
    """Runs dynamo's graphs as they are, but compiling blocks until ``release()``;
    counts graphs."""

    def __init__(self, *, fail: bool = False) -> None:
        self.graphs = 0
        self.fail = fail
        self._gate = threading.Event()

    def release(self) -> None:
        self._gate.set()

    def __call__(self, graph_module, example_inputs):
        assert self._gate.wait(timeout=300), "the test never released the compile"
        if self.fail:
            raise RuntimeError("compiler exploded (test)")
        self.graphs += 1
        return graph_module.forward


def test_one_warm_up_serves_any_batch_atom_and_edge_count_without_recompiling(uma_cases):
    """Warm-up on ONE structure (traced once); then batches of 1..3 rattled copies (edge counts
    change) of it and of a structure of another size and composition (atom counts
    change, the experts re-merge), all with torch set to fail on a recompile, and
    torch's graph counter unchanged. Answers equal the uncompiled unit's."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # counts of tests run before this one
    cases = {label: system for label, system, _ in uma_cases("s1p1")}
    first = cases["triclinic_alloy"]
    turbo = _unit(TURBO_CPU, compile_backend="aot_eager")
    eager = _unit({k: v for k, v in TURBO_CPU.items() if k != "compile"})
    turbo.warm_up([first])
    counters = torch._dynamo.utils.counters
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    # traced once: no frame restarted, no graph built and thrown away
    assert counters["aot_autograd"]["total"] == counters["aot_autograd"]["ok"] == graphs
    edges, atoms, batches = set(), set(), set()
    steps = [("triclinic_alloy", 1), ("triclinic_alloy", 3), ("over_max_neighbors", 2),
             ("triclinic_alloy", 2), ("over_max_neighbors", 1)]
    with torch.compiler.set_stance("fail_on_recompile"):
        for label, size in steps:
            systems = [rattled(cases[label], 0.1, seed) for seed in range(size)]
            batch = turbo.batch(systems)
            edges.add(int(turbo.graph(batch).edge_index.shape[1]))
            atoms.add(int(batch.numbers.shape[0]))
            batches.add(size)
            _assert_close(turbo.predict(systems), eager.predict(systems),
                          label=f"{label} x{size}")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    assert len(edges) == len(atoms) == 5 and batches == {1, 2, 3}
    assert turbo.stats.merges == 4 and turbo.stats.uncompiled_calls == 0


def test_a_background_warm_up_answers_uncompiled_then_switches(uma_cases, caplog):
    """While the compiler is held, predictions are uncompiled (and right); once it
    finishes, the next call logs the switch and runs compiled: answers before and
    after the switch agree to float32 tolerance."""
    torch._dynamo.reset()
    system = uma_cases("s1p1")[3][1]
    steps = [rattled(system, 0.05, seed) for seed in range(4)]
    backend = _GatedBackend()
    turbo = _unit(TURBO_CPU, compile_backend=backend)
    lines = []
    warm_up = turbo.warm_up([system], background=True,
                            progress=lambda text, final, _: lines.append((text, final)))
    before = [turbo.predict([step])[0] for step in steps]
    assert not warm_up.done and backend.graphs == 0
    assert turbo.stats.uncompiled_calls == len(steps)
    backend.release()
    assert warm_up.wait(timeout=300) and warm_up.succeeded
    with caplog.at_level(logging.INFO, logger="umadrive.model.predictor"):
        after = [turbo.predict([step])[0] for step in steps]
    assert "switching to compiled answers after 4 uncompiled" in caplog.text
    assert backend.graphs >= 1 and turbo.stats.uncompiled_calls == len(steps)
    _assert_close(after, before, label="compiled vs uncompiled")
    assert lines[-1][1] and lines[-1][0].startswith("compiled the model for cpu")
    assert all(not final for _, final in lines[:-1])


def test_a_failed_background_compile_leaves_uncompiled_answers(uma_cases, caplog):
    torch._dynamo.reset()
    system = uma_cases("s1p1")[3][1]
    backend = _GatedBackend(fail=True)
    turbo = _unit(TURBO_CPU, compile_backend=backend)
    eager = _unit({k: v for k, v in TURBO_CPU.items() if k != "compile"})
    warm_up = turbo.warm_up([system], background=True)
    backend.release()
    assert warm_up.wait(timeout=300) and not warm_up.succeeded
    with caplog.at_level(logging.ERROR, logger="umadrive.model.predictor"):
        for seed in range(2):
            step = rattled(system, 0.05, seed)
            _assert_close(turbo.predict([step]), eager.predict([step]))
    assert caplog.text.count("compiler exploded (test)") == 1
    assert "answering uncompiled from now on" in caplog.text


def test_warm_up_is_refused_without_compile_or_twice(uma_cases):
    system = uma_cases("s1p1")[3][1]
    with pytest.raises(InferenceSettingsError, match="InferenceSettings.compile=False"):
        _unit({}).warm_up([system])
    backend = _GatedBackend()
    backend.release()
    turbo = _unit(TURBO_CPU, compile_backend=backend)
    turbo.warm_up([system])
    with pytest.raises(RuntimeError, match="already started"):
        turbo.warm_up([system])
    with pytest.raises(InferenceSettingsError, match="named compile backend"):
        _unit(TURBO_CPU, compile_backend=backend).warm_up([system], cache=object())
