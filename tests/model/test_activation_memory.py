"""Activation checkpointing decided by memory: steps that fit in the budget run
without recomputation, larger ones in chunks that fit, with the same answers
(fairchem's, from the committed fixtures); the estimate bounds the measured peak."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from umadrive.model import InferenceSettings, get_predict_unit
from umadrive.model.activation_memory import (MIN_CHUNK_EDGES, bytes_per_edge, checkpoint_chunk,
                                              default_budget)
from umadrive.model.settings import InferenceSettingsError
from umadrive.structure import Prediction
from umadrive.testing import tolerance

from tests.model.helpers import checkpoint_path, reference_cases
from tests.peers import checkout_environment
from tests.reference import assert_prediction_close

ROOT = Path(__file__).resolve().parents[2]

F64 = torch.float64


def test_the_rule():
    per_edge = 1000
    assert checkpoint_chunk(10_000, per_edge, budget=10_000 * per_edge) is None
    assert checkpoint_chunk(100_000, per_edge, budget=10_000 * per_edge) == 10_000
    # a chunk never gets smaller than MIN_CHUNK_EDGES, whatever the budget
    assert checkpoint_chunk(100_000, per_edge, budget=per_edge) == MIN_CHUNK_EDGES


def test_default_budget_is_half_the_free_memory():
    budget = default_budget(torch.device("cpu"))
    assert 0 < budget < 2**40


def test_small_steps_skip_recomputation_and_large_ones_are_chunked_with_the_same_answers():
    cases = reference_cases("s1p1")
    systems = [system for _, system, _ in cases]
    roomy = get_predict_unit(checkpoint_path("s1p1"),
                             inference_settings=InferenceSettings(base_precision_dtype=F64))
    edges = int(roomy.graph(roomy.batch(systems)).edge_index.shape[1])
    per_edge = bytes_per_edge(roomy.model.backbone.config, F64)
    tight = get_predict_unit(checkpoint_path("s1p1"),
                             inference_settings=InferenceSettings(base_precision_dtype=F64),
                             memory_budget=edges * per_edge // 3)
    assert roomy.checkpoint_chunk(edges) is None
    assert tight.checkpoint_chunk(edges) == MIN_CHUNK_EDGES  # this small batch: the floor
    for unit in (roomy, tight):
        for (_, system, answer), prediction in zip(cases, unit.predict(systems)):
            assert_prediction_close(prediction, Prediction(**answer), tolerance(F64),
                                    len(system.numbers))
    assert roomy.stats.checkpointed_calls == 0
    assert tight.stats.checkpointed_calls == 1
    assert {block.edge_wise.checkpoint_chunk
            for block in tight.model.backbone.blocks} == {MIN_CHUNK_EDGES}


@pytest.mark.parametrize("budget, match", [(0, "positive number of bytes, got 0"),
                                           (-5, "got -5"), (True, "got True"),
                                           (1.5e9, "got 1500000000.0")])
def test_bad_budgets_are_refused(budget, match):
    with pytest.raises(InferenceSettingsError, match=match):
        get_predict_unit(checkpoint_path("s1p1"), memory_budget=budget)


def test_a_budget_without_checkpointing_is_refused():
    with pytest.raises(InferenceSettingsError, match="activation_checkpointing=False"):
        get_predict_unit(checkpoint_path("s1p1"), memory_budget=2**30,
                         inference_settings=InferenceSettings(activation_checkpointing=False))


@pytest.mark.parametrize("model", ["umadrive/data/demo/uma-demo.pt", "tests/data/uma_s1p1.pt"])
def test_the_estimate_bounds_the_measured_peak_of_a_step(model):
    """2,048 atoms in a fresh process, no checkpointing: the step's resident-memory
    peak above the level before it is at most the estimate (and not far below it:
    an estimate ten times too large would checkpoint steps that fit)."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "activation_memory.py"),
                           "--child", str(ROOT / model), "8", ""], capture_output=True, text=True,
                          env={**checkout_environment(), "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["edges"] > 80_000
    assert probe["estimate_bytes"] / 4 <= probe["measured_bytes"] <= probe["estimate_bytes"], probe


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_without_checkpointing_a_step_that_cannot_fit_is_chunked_uncompiled_with_a_warning(
        compiled, monkeypatch, caplog):
    """Turbo never recomputes, except that a step whose activations exceed all the
    free memory would be killed by the out-of-memory killer: that step runs in
    chunks, uncompiled (nothing is compiled for it), with the same answers and
    one warning."""
    from umadrive.model import activation_memory

    cases = reference_cases("s1p1")
    systems = [system for _, system, _ in cases]
    settings = InferenceSettings(base_precision_dtype=F64, activation_checkpointing=False,
                                 merge_mole=compiled, compile=compiled)
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    roomy = get_predict_unit(checkpoint_path("s1p1"),
                             inference_settings=InferenceSettings(base_precision_dtype=F64))
    edges = int(roomy.graph(roomy.batch(systems)).edge_index.shape[1])
    per_edge = bytes_per_edge(roomy.model.backbone.config, F64)
    monkeypatch.setattr(activation_memory, "free_memory", lambda device: edges * per_edge // 3)
    cramped = get_predict_unit(checkpoint_path("s1p1"), inference_settings=settings,
                               compile_backend=counting_backend)
    with caplog.at_level("WARNING", logger="umadrive.model.predictor"):
        for _ in range(2):
            for (_, system, answer), prediction in zip(cases, cramped.predict(systems)):
                assert_prediction_close(prediction, Prediction(**answer), tolerance(F64),
                                        len(system.numbers))
    assert cramped.stats.checkpointed_calls == 2
    assert graphs == []
    warnings = [r.getMessage() for r in caplog.records if "of activations" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert f"a step of {edges} edges" in warnings[0] and "fewer structures" in warnings[0]
