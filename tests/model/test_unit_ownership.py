"""A predict unit owns its model: it works on a private copy that shares the
weights' storage, so units built on one model do not affect each other or the
model given."""

from __future__ import annotations

import pytest
import torch

from umadrive.model import InferenceSettings, PredictUnit
from umadrive.model.checkpoint import load_checkpoint
from umadrive.model.mole import MixtureOfLinearExperts
from umadrive.model.uma import UMA
from umadrive.testing import CheckFailed, check_merged_equals_unmerged, tolerance

from tests.model.helpers import checkpoint_path, reference_cases

F64 = torch.float64
CPU = torch.device("cpu")


def _model() -> UMA:
    return UMA.from_checkpoint(load_checkpoint(checkpoint_path("s1p1")), dtype=F64)


def _unit(model: UMA, **settings) -> PredictUnit:
    return PredictUnit(model, device=CPU,
                       settings=InferenceSettings(base_precision_dtype=F64, **settings))


def _mole_layers(model: UMA) -> list[MixtureOfLinearExperts]:
    return [m for m in model.modules() if isinstance(m, MixtureOfLinearExperts)]


def _assert_fairchems_answers(unit: PredictUnit) -> None:
    tol = tolerance(F64)
    for label, system, answer in reference_cases("s1p1"):
        got = unit.predict([system])[0]
        assert abs(got.energy - answer["energy"]) / len(system.numbers) <= tol.energy_per_atom, label
        assert abs(got.forces - answer["forces"]).max() <= tol.forces, label


def test_units_with_different_settings_on_one_model_do_not_interfere():
    model = _model()
    merged = _unit(model, merge_mole=True, activation_checkpointing=True)
    plain = _unit(model, activation_checkpointing=False)
    for unit in (merged, plain, merged):  # interleaved: each keeps its own state
        _assert_fairchems_answers(unit)
    assert merged.stats.merges == 2 * len(reference_cases("s1p1"))

    # the given model is as it was: trainable, no checkpoint chunks, no merged experts
    assert all(parameter.requires_grad for parameter in model.parameters())
    assert {block.edge_wise.checkpoint_chunk for block in model.backbone.blocks} == {None}
    assert all(layer.merged is None for layer in _mole_layers(model))
    # ... and the units hold their own state on copies sharing its weights' storage
    assert {block.edge_wise.checkpoint_chunk for block in plain.model.backbone.blocks} == {None}
    assert all(layer.merged is not None for layer in _mole_layers(merged.model))
    weight = model.backbone.mix_csd.weight
    for unit in (merged, plain):
        assert unit.model is not model
        assert unit.model.backbone.mix_csd.weight.data_ptr() == weight.data_ptr()
        assert not unit.model.backbone.mix_csd.weight.requires_grad


def test_the_merged_check_fails_on_wrong_merged_weights_of_one_unit_only():
    model = _model()
    _, system, _ = reference_cases("s1p1")[2]
    broken = _unit(model, merge_mole=True)
    check_merged_equals_unmerged(broken, [system])
    with torch.no_grad():
        _mole_layers(broken.model)[0].merged.mul_(1.01)
    with pytest.raises(CheckFailed, match=r"merged == unmerged \(float64 tolerances\): FAILED"):
        check_merged_equals_unmerged(broken, [system])
    assert check_merged_equals_unmerged(_unit(model, merge_mole=True), [system]).passed
    with pytest.raises(ValueError, match="needs a unit with merge_mole=True"):
        check_merged_equals_unmerged(_unit(model), [system])
