"""UMA 1.2 and 1.2.1 against fairchem-core 2.24 (answers committed in tests/data):
every task, float64 and float32; the UMA-S-1.2 composition quirk both ways; the
many-to-one dataset mapping; balanced channels; merged experts (head included)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from tests.model.conftest import checkpoint_path
from umadrive.model import InferenceSettings, PredictUnit, get_predict_unit
from umadrive.model._unpickle import read_torch_zip
from umadrive.model.checkpoint import load_checkpoint
from umadrive.model.config import UnsupportedModelError
from umadrive.model.escn import GraphInputs
from umadrive.model.graph import edge_vectors
from umadrive.model.heads import ExpertHead
from umadrive.model.uma import UMA
from umadrive.structure import Structure
from umadrive.testing import tolerance

F64 = torch.float64
FIXTURES_1P2 = ("s1p2", "s1p2p1")
#: merged and unmerged experts are the same arithmetic up to summation order (issue 10)
SAME_ARITHMETIC = 1e-10


def _unit(checkpoint, dtype=F64, **settings) -> PredictUnit:
    """A predict unit of an in-memory checkpoint (e.g. one with a changed config)."""
    model = UMA.from_checkpoint(checkpoint, dtype=dtype)
    return PredictUnit(model, device=torch.device("cpu"), settings=InferenceSettings(
        base_precision_dtype=dtype, **settings))


def _retagged(checkpoint, model_id: str):
    config = copy.deepcopy(checkpoint.model_config)
    config["model_id"] = model_id
    return dataclasses.replace(checkpoint, model_config=config)


def _assert_matches(prediction, answer, n_atoms, dtype, label, scale=None):
    tol = tolerance(dtype)
    energy_tol, forces_tol, stress_tol = (
        (tol.energy_per_atom, tol.forces, tol.stress) if scale is None else (scale,) * 3)
    assert abs(prediction.energy - answer["energy"]) / n_atoms <= energy_tol, label
    np.testing.assert_allclose(prediction.forces, answer["forces"], rtol=0, atol=forces_tol,
                               err_msg=label)
    if answer["stress"] is None:
        assert prediction.stress is None, label
    else:
        np.testing.assert_allclose(prediction.stress, answer["stress"], rtol=0, atol=stress_tol,
                                   err_msg=label)


@pytest.fixture(scope="module")
def checkpoints(uma_checkpoint_path):
    return {name: load_checkpoint(uma_checkpoint_path(name)) for name in FIXTURES_1P2}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", FIXTURES_1P2)
def test_matches_fairchem_on_every_task(name, dtype, uma_unit, uma_cases):
    unit = uma_unit(name, dtype)
    cases = uma_cases(name)
    assert {system.task for _, system, _ in cases} == set(unit.datasets)
    for label, system, answer in cases:
        _assert_matches(unit.predict([system])[0], answer, len(system.numbers), dtype, label)


def test_fixtures_are_what_they_claim(checkpoints, uma_unit, uma_cases):
    """Versions, 7 tasks (+ omat_rattle in the stage-1-shaped 1.2 file), head experts
    that are views of a larger storage, EMA weights that differ from the raw ones,
    balanced channels, and a charged open-shell molecule, slabs with (T, T, F) and a
    lone atom among the structures."""
    s1p2, s1p2p1 = uma_unit("s1p2").model, uma_unit("s1p2p1").model
    assert (s1p2.config.version, s1p2p1.config.version) == ("1.2", "1.2.1")
    assert s1p2p1.datasets == ("oc20", "oc22", "oc25", "odac", "omat", "omc", "omol")
    assert s1p2.datasets == tuple(sorted((*s1p2p1.datasets, "omat_rattle")))
    assert s1p2.supports_single_atoms and s1p2p1.supports_single_atoms
    assert s1p2p1.config.charge_channels == (0, 3) and s1p2p1.config.spin_channels == (3, 5)
    assert s1p2.config.charge_channels == s1p2.config.spin_channels == (0, 0)
    raw = read_torch_zip(checkpoint_path("s1p2p1")).state
    ema, plain = raw["ema_state_dict"], raw["model_state_dict"]
    weights = ema["module.output_heads.energyandforcehead.head.energy_block.0.weights"]
    assert weights.shape[0] == 7 and weights.untyped_storage().nbytes() > weights.nbytes
    differing = [key for key, value in plain.items()
                 if value.is_floating_point() and not torch.equal(value, ema["module." + key])]
    assert len(differing) > 10
    cases = {label: system for label, system, _ in uma_cases("s1p2p1")}
    assert cases["charged_open_shell"].charge == 1 and cases["charged_open_shell"].spin == 2
    assert [list(cases[f"slab_{t}"].structure.pbc) for t in ("oc20", "oc22", "oc25")] == \
        [[True, True, False]] * 3
    assert len(cases["single_atom"].numbers) == 1 and not cases["single_atom"].structure.pbc.any()
    assert isinstance(s1p2p1.head, ExpertHead)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_the_1p2_quirk_both_ways(dtype, checkpoints, uma_unit, uma_cases):
    """The 1.2.1 weights tagged UMA-S-1.2 give fairchem's answers for that tag. They
    differ from the 1.2.1 answers where the experts act, on every structure with
    edges, and only there: a lone atom has no edges, so no expert layer runs."""
    as_1p2 = _unit(_retagged(checkpoints["s1p2p1"], "UMA-S-1.2"), dtype)
    as_1p2p1 = uma_unit("s1p2p1", dtype)
    assert as_1p2.model.config.version == "1.2"
    plain = {label: answer for label, _, answer in uma_cases("s1p2p1")}
    for label, system, answer in uma_cases("s1p2p1_as_1p2"):
        _assert_matches(as_1p2.predict([system])[0], answer, len(system.numbers), dtype, label)
        difference = abs(answer["energy"] - plain[label]["energy"])
        if len(system.numbers) == 1:
            assert difference == 0.0, label
        else:
            assert difference > 1e-4, label
    assert as_1p2p1.model.config.version == "1.2.1"


def test_the_quirk_is_only_the_composition_mean(uma_unit, uma_cases, checkpoints):
    """Only the expert coefficients differ between the tags, and exactly as a mean
    over n + 1 (a zero included) instead of n: the 1.2 coefficients of n atoms are the
    1.2.1 ones with the composition embedding scaled by n / (n + 1)."""
    as_1p2 = UMA.from_checkpoint(_retagged(checkpoints["s1p2p1"], "UMA-S-1.2"), dtype=F64)
    as_1p2p1 = uma_unit("s1p2p1").model
    for label, system, _ in uma_cases("s1p2p1"):
        numbers = torch.as_tensor(system.numbers)
        batch = torch.zeros_like(numbers)
        charge, spin = torch.tensor([system.charge]), torch.tensor([system.spin])
        embedding = as_1p2p1.backbone.system_embedding(charge, spin, (system.task,))
        assert torch.equal(embedding, as_1p2.backbone.system_embedding(charge, spin, (system.task,)))
        ours = as_1p2.backbone.expert_coefficients(numbers, batch, embedding)
        theirs = as_1p2p1.backbone.expert_coefficients(numbers, batch, embedding)
        assert not torch.allclose(ours, theirs, atol=1e-6), label
        n = len(numbers)
        composition = as_1p2p1.backbone.composition_embedding(numbers).mean(0, keepdim=True)
        logits = as_1p2p1.backbone.routing_mlp(
            torch.cat((composition * n / (n + 1), embedding), dim=1))
        torch.testing.assert_close(ours, torch.softmax(logits, dim=1) + 0.005,
                                   rtol=0, atol=1e-14)


def _supercell(system, repeat):
    from ase import Atoms

    atoms = Atoms(numbers=system.numbers, positions=system.structure.positions,
                  cell=system.structure.cell, pbc=system.structure.pbc).repeat(repeat)
    return dataclasses.replace(system, numbers=atoms.numbers, structure=Structure(
        positions=atoms.positions, cell=np.array(atoms.cell), pbc=atoms.pbc))


def test_expert_mix_depends_on_the_atom_count_only_under_1p2(uma_unit, uma_cases):
    """A 2x1x1 supercell has the expert mix of its cell under 1.2.1 (reduced
    composition); under 1.2 the mix depends on the atom count."""
    for name, same in (("s1p2p1", True), ("s1p2", False)):
        backbone = uma_unit(name).model.backbone
        system = {label: s for label, s, _ in uma_cases(name)}["triclinic_alloy"]
        embedding = backbone.system_embedding(torch.tensor([0]), torch.tensor([0]), ("omat",))
        mixes = []
        for numbers in (system.numbers, np.tile(system.numbers, 2)):
            numbers = torch.as_tensor(numbers)
            mixes.append(backbone.expert_coefficients(numbers, torch.zeros_like(numbers),
                                                      embedding))
        assert torch.allclose(mixes[0], mixes[1], rtol=0, atol=1e-14) == same, name


def test_many_to_one_dataset_mapping(uma_unit, checkpoints, uma_cases):
    """omat_rattle -> omat shares omat's embedding and head expert (its own embedding
    entry, present in the file, is not used), has its own output scaling, and the
    eighth head-expert slot is unused."""
    model = uma_unit("s1p2").model
    assert model.head_config.num_experts == 8
    assert model.head_expert("omat_rattle") == model.head_expert("omat") == 4
    assert sorted(model.head_config.experts.values()) == [0, 1, 2, 3, 4, 4, 5, 6]
    state = dict(checkpoints["s1p2"].state_dict)
    key = "backbone.dataset_embedding.dataset_emb_dict.omat_rattle.weight"
    state[key] = torch.full_like(state[key], 3.0)
    head = "output_heads.energyandforcehead.head.energy_block.0.weights"
    state[head] = state[head].clone()
    state[head][7] = 5.0
    changed = _unit(dataclasses.replace(checkpoints["s1p2"], state_dict=state))
    for label, system, answer in uma_cases("s1p2"):
        _assert_matches(changed.predict([system])[0], answer, len(system.numbers), F64, label)


def test_mapping_targets_must_be_names(checkpoints):
    config = copy.deepcopy(checkpoints["s1p2"].model_config)
    config["backbone"]["dataset_mapping"]["omat_rattle"] = "omat_tweaked"
    with pytest.raises(UnsupportedModelError, match=r"sends names to \['omat_tweaked'\]"):
        UMA.from_checkpoint(dataclasses.replace(checkpoints["s1p2"], model_config=config))


def test_newer_versions_are_refused_by_name(checkpoints):
    with pytest.raises(UnsupportedModelError,
                       match=r"unsupported model_id 'UMA-S-1.3'; umadrive supports UMA 1.0, 1.1, "
                             r"1.2, 1.2.1 .*uma-s-1p2p1"):
        UMA.from_checkpoint(_retagged(checkpoints["s1p2p1"], "UMA-S-1.3"))


def test_balanced_channels_sum_to_charge_and_spin(uma_unit, uma_cases):
    """After each block the charge channels of each system sum to its charge and the
    spin channels to spin - 1 (checked on a batch of two systems)."""
    unit = uma_unit("s1p2p1")
    backbone = unit.model.backbone
    cases = {label: system for label, system, _ in uma_cases("s1p2p1")}
    systems = [cases["charged_open_shell"], cases["triclinic_alloy"]]
    atoms = unit.batch(systems)
    graph = unit.graph(atoms)
    sums = []

    def record(module, inputs, output):
        balanced = backbone.balance_channels(output, atoms.batch, targets)
        sums.append(torch.zeros(2, 5, dtype=F64).index_add(0, atoms.batch, balanced[:, 0, :5]))

    targets = torch.stack((atoms.charge, atoms.spin - 1, torch.bincount(atoms.batch)),
                          dim=1).to(F64)
    handles = [block.register_forward_hook(record) for block in backbone.blocks]
    try:
        vectors = edge_vectors(atoms.positions, atoms.cell, atoms.batch, graph)
        backbone(GraphInputs(numbers=atoms.numbers, batch=atoms.batch,
                             edge_index=graph.edge_index, edge_vectors=vectors,
                             charge=atoms.charge, spin=atoms.spin, datasets=atoms.datasets))
    finally:
        for handle in handles:
            handle.remove()
    assert len(sums) == len(backbone.blocks)
    expected = torch.tensor([[1.0] * 3 + [1.0] * 2, [0.0] * 3 + [-1.0] * 2], dtype=F64)
    for total in sums:
        torch.testing.assert_close(total, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", FIXTURES_1P2)
def test_merged_equals_unmerged_for_each_task(name, checkpoints, uma_cases):
    """merge_mole (backbone and head experts) against routed experts, float64, on
    every structure in turn: one merge per change of system, and a composition
    change (a supercell of the same formula under 1.2, whose mix depends on n; a
    different structure for every task) merges again."""
    merged = _unit(checkpoints[name], merge_mole=True)
    routed = _unit(checkpoints[name])
    cases = uma_cases(name)
    for index, (label, system, _) in enumerate(cases):
        _assert_matches(merged.predict([system])[0],
                        vars(routed.predict([system])[0]), len(system.numbers), F64,
                        label, scale=SAME_ARITHMETIC)
        assert merged.stats.merges == index + 1, label
    alloy = {label: s for label, s, _ in cases}["triclinic_alloy"]
    bigger = _supercell(alloy, (2, 1, 1))
    _assert_matches(merged.predict([bigger])[0], vars(routed.predict([bigger])[0]),
                    len(bigger.numbers), F64, "supercell", scale=SAME_ARITHMETIC)
    count_matters = name == "s1p2"
    assert merged.stats.merges == len(cases) + 1
    merged.predict([alloy])
    assert merged.stats.merges == len(cases) + 1 + (1 if count_matters else 0)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_turbo_with_inductor_equals_default(uma_unit, uma_cases):
    """turbo (merged experts, inductor-compiled message passing) on the 1.2.1 file,
    float32, MD-like steps: the default mode's answers."""
    torch._dynamo.reset()
    system = {label: s for label, s, _ in uma_cases("s1p2p1")}["triclinic_alloy"]
    turbo = get_predict_unit(checkpoint_path("s1p2p1"), inference_settings=InferenceSettings(
        base_precision_dtype=torch.float32, activation_checkpointing=False, merge_mole=True,
        compile=True))
    default = uma_unit("s1p2p1", torch.float32)
    rng = np.random.default_rng(3)
    for step in range(2):
        positions = system.structure.positions + rng.normal(0, 0.05, (len(system.numbers), 3))
        moved = dataclasses.replace(system, structure=dataclasses.replace(
            system.structure, positions=positions))
        expected = default.predict([moved])[0]
        _assert_matches(turbo.predict([moved])[0], vars(expected), len(system.numbers),
                        torch.float32, f"step {step}")
    assert turbo.stats.merges == 1 and turbo.stats.calls == 2
