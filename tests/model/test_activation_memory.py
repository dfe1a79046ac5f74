"""Activation checkpointing decided by memory: steps that fit in the budget run
without recomputation, larger ones in chunks that fit, with the same answers
(fairchem's, from the committed fixtures); the estimate bounds the measured peak."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from umadrive.model import InferenceSettings, get_predict_unit
from umadrive.model.activation_memory import (MIN_CHUNK_EDGES, bytes_per_edge, checkpoint_chunk,
                                              default_budget, system_groups)
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


def test_system_groups_are_as_few_and_as_even_as_the_limit_allows():
    assert system_groups([10] * 16, max_edges=1000) == [range(16)]
    # equal beads, 5 fit: 16 as 4 groups of 4 (not 5 + 5 + 5 + 1), 32 as 7 of 4 or 5
    assert system_groups([10] * 16, max_edges=50) == [range(i, i + 4) for i in range(0, 16, 4)]
    assert sorted(len(group) for group in system_groups([10] * 32, max_edges=50)) == [4] * 3 + [5] * 4
    assert system_groups([30, 10, 10, 30], max_edges=50) == [range(0, 2), range(2, 4)]
    # a system over the limit stands alone; the others are grouped around it
    assert system_groups([5, 60, 5, 5], max_edges=50) == [range(0, 1), range(1, 2), range(2, 4)]
    assert system_groups([100, 30, 30, 30], max_edges=50) == [range(i, i + 1) for i in range(4)]
    with pytest.raises(ValueError, match="at least 1, got 0"):
        system_groups([1], max_edges=0)


def _fewest_groups(edges: list[int], max_edges: int) -> int:
    """By exhaustive dynamic programming over every cut of the systems."""
    fewest = [0] + [len(edges)] * len(edges)
    for stop in range(1, len(edges) + 1):
        for start in range(stop):
            if stop - start == 1 or sum(edges[start:stop]) <= max_edges:
                fewest[stop] = min(fewest[stop], fewest[start] + 1)
    return fewest[-1]


def test_system_groups_cover_the_batch_in_order_within_the_limit_in_the_fewest_groups():
    rng = np.random.default_rng(0)
    for _ in range(500):
        edges = rng.integers(1, 100, size=rng.integers(1, 12)).tolist()
        max_edges = int(rng.integers(1, 300))
        groups = system_groups(edges, max_edges)
        assert [system for group in groups for system in group] == list(range(len(edges)))
        assert all(len(group) == 1 or sum(edges[b] for b in group) <= max_edges
                   for group in groups)
        assert len(groups) == _fewest_groups(edges, max_edges), (edges, max_edges)


def _edges_per_system(unit, systems) -> list[int]:
    atoms = unit.batch(systems)
    graph = unit.graph(atoms)
    return torch.bincount(atoms.batch[graph.edge_index[1]],
                          minlength=len(systems)).tolist()


@pytest.mark.parametrize("external_graph", [False, True], ids=["internal graph", "vesin graph"])
def test_a_batch_over_the_budget_runs_in_groups_of_whole_systems_without_recomputation(
        external_graph, caplog):
    cases = reference_cases("s1p1")
    systems = [system for _, system, _ in cases]
    settings = InferenceSettings(base_precision_dtype=F64, external_graph_gen=external_graph)
    roomy = get_predict_unit(checkpoint_path("s1p1"), inference_settings=settings)
    edges = _edges_per_system(roomy, systems)
    per_edge = bytes_per_edge(roomy.model.backbone.config, F64)
    # the largest system just fits alone, the batch does not
    tight = get_predict_unit(checkpoint_path("s1p1"), inference_settings=settings,
                             memory_budget=max(edges) * per_edge)
    with caplog.at_level("INFO", logger="umadrive.model.predictor"):
        for _ in range(2):
            for (_, system, answer), prediction in zip(cases, tight.predict(systems)):
                assert_prediction_close(prediction, Prediction(**answer), tolerance(F64),
                                        len(system.numbers))
    assert tight.stats.split_calls == 2 and tight.stats.checkpointed_calls == 0
    assert {block.edge_wise.checkpoint_chunk for block in tight.model.backbone.blocks} == {None}
    notes = [r.getMessage() for r in caplog.records if "groups of whole systems" in r.getMessage()]
    assert len(notes) == 1, notes
    assert f"a batch of {len(systems)} systems ({sum(edges)} edges)" in notes[0]


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
def test_without_checkpointing_a_system_that_cannot_fit_is_chunked_uncompiled_with_a_warning(
        compiled, monkeypatch, caplog):
    """Turbo never recomputes, except that a step whose activations exceed all the
    free memory would be killed by the out-of-memory killer: a batch is split
    into groups of whole systems that fit (compiled as usual), and a system that
    does not fit on its own runs in chunks, uncompiled, with the same answers and
    one warning for the whole run."""
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
    edges = _edges_per_system(roomy, systems)
    per_edge = bytes_per_edge(roomy.model.backbone.config, F64)
    largest = max(edges)
    too_big = [count for count in edges if count > largest // 3]
    assert sum(edges) - sum(too_big) > 0 and len(too_big) == 2  # some fit, two do not
    monkeypatch.setattr(activation_memory, "free_memory", lambda device: largest * per_edge // 3)
    cramped = get_predict_unit(checkpoint_path("s1p1"), inference_settings=settings,
                               compile_backend=counting_backend)
    with caplog.at_level("WARNING", logger="umadrive.model.predictor"):
        for _ in range(2):
            for (_, system, answer), prediction in zip(cases, cramped.predict(systems)):
                assert_prediction_close(prediction, Prediction(**answer), tolerance(F64),
                                        len(system.numbers))
    assert cramped.stats.split_calls == 2
    assert cramped.stats.checkpointed_calls == 2 * len(too_big)
    assert bool(graphs) == compiled  # the groups that fit ran compiled
    warnings = [r.getMessage() for r in caplog.records if "of activations" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert f"a step of {min(too_big)} edges" in warnings[0] and "fewer structures" in warnings[0]
