"""The predict unit under every inference setting: each mode gives fairchem's answers
(and the default mode's), merged experts follow composition, charge, spin and task
changes (merging once per change), batches of beads, external graphs, compile."""

from __future__ import annotations

import dataclasses
import logging
import shutil

import numpy as np
import pytest
import torch

from umadrive.model import InferenceSettings, System, get_predict_unit
from umadrive.model.graph import RadiusGraph, vesin_graph
from umadrive.model.predictor import InvalidSystemError
from umadrive.model.settings import InferenceSettingsError
from umadrive.structure import Structure
from umadrive.testing import check_batch_equals_single, check_merged_equals_unmerged, tolerance

from tests.model.helpers import checkpoint_path, rattled

F64 = torch.float64
#: turbo without the CUDA-only settings and without inductor code generation (CI-sized)
TURBO_CPU = dict(activation_checkpointing=False, merge_mole=True, compile=True)


def _unit(settings: dict, dtype=F64, name="s1p1", **kwargs):
    return get_predict_unit(checkpoint_path(name), inference_settings=InferenceSettings(
        base_precision_dtype=dtype, **settings), **kwargs)


def _assert_same(prediction, expected, n_atoms, dtype=F64, label=""):
    tol = tolerance(dtype)
    energy = expected["energy"] if isinstance(expected, dict) else expected.energy
    forces = expected["forces"] if isinstance(expected, dict) else expected.forces
    stress = expected["stress"] if isinstance(expected, dict) else expected.stress
    assert abs(prediction.energy - energy) / n_atoms <= tol.energy_per_atom, label
    np.testing.assert_allclose(prediction.forces, forces, rtol=0, atol=tol.forces, err_msg=label)
    if stress is None:
        assert prediction.stress is None, label
    else:
        np.testing.assert_allclose(prediction.stress, stress, rtol=0, atol=tol.stress,
                                   err_msg=label)


def _supercell(system: System, repeat: tuple[int, int, int]) -> System:
    from ase import Atoms

    atoms = Atoms(numbers=system.numbers, positions=system.structure.positions,
                  cell=system.structure.cell, pbc=system.structure.pbc).repeat(repeat)
    return dataclasses.replace(system, numbers=atoms.numbers, structure=Structure(
        positions=atoms.positions, cell=np.array(atoms.cell), pbc=atoms.pbc))


MODES = {
    "no activation checkpointing": dict(activation_checkpointing=False),
    "merge_mole": dict(merge_mole=True),
    "graph version 1": dict(internal_graph_gen_version=1),
    "external graph (vesin)": dict(external_graph_gen=True),
    "wigner_cuda (inactive on CPU)": dict(wigner_cuda=True),
    "turbo without compile": dict(activation_checkpointing=False, merge_mole=True),
}


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_gives_fairchems_answers(mode, uma_cases):
    """Every structure of the oracle fixtures, one call each, in the order of the
    fixtures (so merge_mole re-merges between them)."""
    unit = _unit(MODES[mode])
    for label, system, answer in uma_cases("s1p1"):
        _assert_same(unit.predict([system])[0], answer, len(system.numbers), label=label)


def test_float32_modes_match_the_default_mode(uma_cases):
    default = _unit({}, torch.float32)
    turbo = _unit(dict(activation_checkpointing=False, merge_mole=True, tf32=True),
                  torch.float32)
    for label, system, _ in uma_cases("s1p1"):
        _assert_same(turbo.predict([system])[0], default.predict([system])[0],
                     len(system.numbers), torch.float32, label)


def test_cuda_only_settings_are_accepted_and_reported_inactive_on_cpu():
    unit = _unit(dict(wigner_cuda=True, merge_mole=True), torch.float32)
    active = unit.active_settings()
    assert active["wigner_cuda"] is False and active["tf32"] is False
    assert active["merge_mole"] is True and active["activation_checkpointing"] is True
    assert _unit(dict(tf32=True), torch.float32).active_settings()["tf32"] is False


def test_checkpointing_in_chunks_that_cut_across_systems(uma_cases):
    """Small edge chunks in a mixed batch: the chunks split systems, so each chunk
    carries part of the expert routing."""
    systems = [system for _, system, _ in uma_cases("s1p1")]
    answers = [answer for _, _, answer in uma_cases("s1p1")]
    unit = _unit({})
    chunk = 150
    graph = unit.graph(unit.batch(systems))
    counts = graph.neighbors.tolist()
    assert sum(counts) > 3 * chunk
    boundaries = set(np.cumsum(counts).tolist())
    assert any(start not in boundaries for start in range(chunk, sum(counts), chunk))
    unit.model.backbone.set_checkpoint_chunk(chunk)
    for system, answer, prediction in zip(systems, answers, unit.predict(systems)):
        _assert_same(prediction, answer, len(system.numbers))
    with pytest.raises(ValueError, match="at least 1 edge, got 0"):
        unit.model.backbone.set_checkpoint_chunk(0)


def test_merged_experts_follow_every_change_and_merge_once_per_change(uma_cases, caplog):
    cases = {label: system for label, system, _ in uma_cases("s1p1")}
    reference = _unit({})
    turbo = _unit(dict(activation_checkpointing=False, merge_mole=True))
    cu_cell = cases["over_max_neighbors"]
    si = cases["primitive_2_atoms"]
    steps = [  # (system, merges expected after the call)
        (cu_cell, 1),
        (rattled(cu_cell, 0.02, 1), 1),                  # an MD step
        (_supercell(si, (2, 1, 1)), 2),                   # composition change
        (si, 2),                                          # same reduced composition
        (dataclasses.replace(si, charge=1), 3),           # charge change
        (dataclasses.replace(si, charge=1, spin=3), 4),   # spin change
        (dataclasses.replace(si, charge=1, spin=3, task="omc"), 5),  # task change
        (cases["triclinic_alloy"], 6),
        (cu_cell, 7),                                     # back to the first system
    ]
    with caplog.at_level(logging.INFO, logger="umadrive.model.merge"):
        for index, (system, merges) in enumerate(steps):
            _assert_same(turbo.predict([system])[0], reference.predict([system])[0],
                         len(system.numbers), label=f"step {index}")
            assert turbo.stats.merges == merges, f"step {index}"
    merge_lines = [record for record in caplog.records if "merged the experts" in record.message]
    assert len(merge_lines) == 7
    assert "charge 1, spin 3, task omc" in merge_lines[4].message
    assert turbo.stats.routed_calls == 0


def test_four_beads_in_one_batch_equal_four_single_calls(uma_cases):
    cases = {label: system for label, system, _ in uma_cases("s1p1")}
    beads = [rattled(cases["triclinic_alloy"], 0.03, seed) for seed in range(4)]
    turbo = _unit(dict(activation_checkpointing=False, merge_mole=True))
    check_batch_equals_single(turbo.predict, beads)
    assert turbo.stats.merges == 1 and turbo.stats.routed_calls == 0
    check_merged_equals_unmerged(turbo, beads)
    assert turbo.stats.merges == 1


def test_a_mixed_batch_in_merged_mode_is_routed_for_that_call_only(uma_cases):
    systems = [system for _, system, _ in uma_cases("s1p1")]
    answers = [answer for _, _, answer in uma_cases("s1p1")]
    turbo = _unit(dict(merge_mole=True))
    turbo.predict([systems[0]])
    for system, answer, prediction in zip(systems, answers, turbo.predict(systems)):
        _assert_same(prediction, answer, len(system.numbers))
    assert turbo.stats.routed_calls == 1 and turbo.stats.merges == 1
    _assert_same(turbo.predict([systems[0]])[0], answers[0], len(systems[0].numbers))
    assert turbo.stats.merges == 1  # the merged weights were kept


def test_external_graph_from_the_caller(uma_cases):
    unit = _unit(dict(external_graph_gen=True))
    label, system, answer = uma_cases("s1p1")[3]
    atoms = unit.batch([system])
    graph = vesin_graph(atoms.positions, atoms.cell, atoms.pbc, atoms.batch,
                        cutoff=unit.model.cutoff, max_neighbors=unit.model.max_neighbors)
    _assert_same(unit.predict([system], graph=graph)[0], answer, len(system.numbers), label=label)

    calls = []

    def generator(*args, **kwargs):
        calls.append(kwargs)
        return vesin_graph(*args, **kwargs)

    custom = _unit(dict(external_graph_gen=True), graph_generator=generator)
    _assert_same(custom.predict([system])[0], answer, len(system.numbers), label=label)
    assert calls and calls[0]["cutoff"] == custom.model.cutoff


def test_bad_external_graphs_are_refused(uma_cases):
    systems = [system for _, system, _ in uma_cases("s1p1")][:2]
    unit = _unit(dict(external_graph_gen=True))
    atoms = unit.batch(systems)
    n = atoms.numbers.shape[0]
    good = unit.graph(atoms)
    with pytest.raises(InvalidSystemError, match=rf"atom indices outside \[0, {n - 1}\]"):
        unit.predict(systems, graph=dataclasses.replace(good, edge_index=good.edge_index + n))
    with pytest.raises(InvalidSystemError, match=r"cell_offsets has shape \(3, 3\), expected"):
        unit.predict(systems, graph=dataclasses.replace(good, cell_offsets=torch.zeros(3, 3)))
    crossing = RadiusGraph(edge_index=torch.tensor([[0], [n - 1]]),
                           cell_offsets=torch.zeros(1, 3, dtype=F64),
                           neighbors=torch.tensor([1, 0]))
    with pytest.raises(InvalidSystemError, match="joins atoms of different systems"):
        unit.predict(systems, graph=crossing)
    with pytest.raises(InferenceSettingsError, match="external_graph_gen=False; set "
                                                     "external_graph_gen=True"):
        _unit({}).predict(systems, graph=good)
    with pytest.raises(InferenceSettingsError, match="graph_generator was given but"):
        _unit({}, graph_generator=vesin_graph)


class _CountingBackend:
    """A torch.compile backend that runs the captured graphs eagerly and counts them."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return graph_module.forward


@pytest.mark.parametrize("settings", [TURBO_CPU, dict(compile=True)],
                         ids=["turbo", "default+compile"])
def test_compiled_modes_follow_md_steps_without_recompiling(settings, uma_cases):
    """compile (dynamic shapes; with merged experts, or routed with checkpointed
    edge chunks) over MD-like steps whose edge counts differ, then a composition
    change: the same answers as the default mode, and no new graph after the
    first call's."""
    torch._dynamo.reset()
    cases = {label: system for label, system, _ in uma_cases("s1p1")}
    backend = _CountingBackend()
    turbo = _unit(settings, compile_backend=backend)
    default = _unit({})
    steps = [rattled(cases["triclinic_alloy"], 0.15, seed) for seed in range(4)]
    edge_counts = set()
    for index, system in enumerate(steps):
        edge_counts.add(int(turbo.graph(turbo.batch([system])).edge_index.shape[1]))
        _assert_same(turbo.predict([system])[0], default.predict([system])[0],
                     len(system.numbers), label=f"step {index}")
        if index == 0:
            first_graphs = backend.graphs
            assert turbo.stats.warmup_s is not None and first_graphs >= 1
    assert len(edge_counts) > 1, "the steps should change the number of edges"
    assert backend.graphs == first_graphs
    other = cases["over_max_neighbors"]
    _assert_same(turbo.predict([other])[0], default.predict([other])[0], len(other.numbers))
    assert turbo.stats.merges == (2 if settings.get("merge_mole") else 0)
    assert backend.graphs <= 2 * first_graphs


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_inductor_compile_on_a_tiny_model(uma_cases):
    """The real code generation (C++ on CPU) on the smallest checkpoint, float32."""
    torch._dynamo.reset()
    label, system, answer = uma_cases("s1p0")[3]
    turbo = _unit(TURBO_CPU, torch.float32, name="s1p0")
    default = _unit({}, torch.float32, name="s1p0")
    for seed in range(2):
        step = rattled(system, 0.05, seed)
        _assert_same(turbo.predict([step])[0], default.predict([step])[0], len(step.numbers),
                     torch.float32, label=label)
    assert turbo.stats.warmup_s > 0 and turbo.stats.calls == 2


def test_model_names_resolve_through_the_cache(tmp_path, monkeypatch):
    shutil.copy(checkpoint_path("s1p1"), tmp_path / "uma-s-1p1.pt")
    monkeypatch.setenv("UMADRIVE_CACHE", str(tmp_path))
    unit = get_predict_unit("uma-s-1p1")
    assert unit.model.cutoff == 6.0


@pytest.mark.parametrize(("cell", "message"), [
    (np.diag([7.2, 7.2, 0.0005292]),
     r"system 0: the cell is too thin .* heights \(plane spacings\) 7.2, 7.2, 0.0005292 Å .* a 6 Å "
     r"cutoff needs 11338 periodic images each way along direction 2 .* limits 50 each way"),
    (np.array([[7.2, 0, 0], [0, 7.2, 0], [7.2, 0, 0]]), r"system 0: the cell is singular"),
], ids=["near-singular", "singular"])
def test_a_bad_cell_is_refused_before_the_graph_is_built(uma_unit, cell, message):
    """The issue's cell (0.001 Bohr thick) would need ~10^9 source images in graph
    generation; the predictor refuses it naming the cell, as the driver does."""
    from ase.build import bulk

    from umadrive.model.graph import GraphInputError

    copper = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    system = System(numbers=copper.numbers,
                    structure=Structure(positions=copper.positions, cell=cell, pbc=np.ones(3, bool)),
                    task="omat", charge=0, spin=0)
    with pytest.raises(GraphInputError, match=message):
        uma_unit("s1p1").predict([system])
