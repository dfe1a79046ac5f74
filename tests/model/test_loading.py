"""Building the model from a checkpoint: versions, options and weights it refuses."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from umadrive.model.checkpoint import CheckpointError, load_checkpoint
from umadrive.model.config import UnsupportedModelError
from umadrive.model.uma import UMA


@pytest.fixture(scope="module")
def checkpoint(uma_checkpoint_path):
    return load_checkpoint(uma_checkpoint_path("s1p1"))


def _with_config(checkpoint, change):
    config = copy.deepcopy(checkpoint.model_config)
    change(config)
    return dataclasses.replace(checkpoint, model_config=config)


def test_versions(checkpoint, uma_checkpoint_path):
    assert UMA.from_checkpoint(checkpoint).config.version == "1.1"
    assert UMA.from_checkpoint(load_checkpoint(uma_checkpoint_path("s1p0"))).config.version == "1.0"
    newer = _with_config(checkpoint, lambda c: c.update(model_id="UMA-S-1.3"))
    with pytest.raises(UnsupportedModelError,
                       match=r"unsupported model_id 'UMA-S-1.3'; umadrive supports UMA 1.0, "
                             r"1.1, 1.2, 1.2.1 \(model_id UMA-1.1, UMA-S-1.2, UMA-S-1.2.1"):
        UMA.from_checkpoint(newer)
    future = _with_config(checkpoint, lambda c: c["backbone"].update(model_version=1.3))
    with pytest.raises(UnsupportedModelError, match=r"unsupported model version 1.3; umadrive supports UMA 1.0"):
        UMA.from_checkpoint(future)


def test_unsupported_options_are_named(checkpoint):
    grid = _with_config(checkpoint, lambda c: c["backbone"].update(ff_type="grid"))
    with pytest.raises(UnsupportedModelError, match=r"backbone option ff_type='grid'.*ff_type='spectral'"):
        UMA.from_checkpoint(grid)


def test_missing_and_unexpected_weights_are_listed(checkpoint):
    state = dict(checkpoint.state_dict)
    del state["backbone.mix_csd.weight"]
    state["backbone.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"(?s)backbone\.mix_csd\.weight.*backbone\.extra\.weight"):
        UMA.from_checkpoint(dataclasses.replace(checkpoint, state_dict=state))


def test_wrong_shapes_and_wrong_basis_are_refused(checkpoint):
    state = dict(checkpoint.state_dict)
    state["backbone.mix_csd.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"backbone\.mix_csd\.bias \(3,\) \(expected \(8,\)\)"):
        UMA.from_checkpoint(dataclasses.replace(checkpoint, state_dict=state))
    state = dict(checkpoint.state_dict)
    state["backbone.Jd_2"] = -state["backbone.Jd_2"]
    with pytest.raises(CheckpointError, match=r"Jd_2 differs from the real spherical-harmonic"):
        UMA.from_checkpoint(dataclasses.replace(checkpoint, state_dict=state))


def test_float64_and_device_placement(checkpoint):
    model = UMA.from_checkpoint(checkpoint, dtype=torch.float64)
    assert model.dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert not model.training
