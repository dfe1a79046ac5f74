"""InferenceSettings: the spec's preset table and the messages for invalid settings."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from umadrive.model.cuda_modes import tf32_matmuls
from umadrive.model.settings import (InferenceSettings, InferenceSettingsError,
                                     resolve_settings)

# The table of the UMA spec, "Inference settings: the semantics this project implements".
SPEC_PRESETS = {
    "default": dict(tf32=False, activation_checkpointing=True, merge_mole=False, compile=False,
                    wigner_cuda=False, external_graph_gen=False, internal_graph_gen_version=2),
    "turbo": dict(tf32=True, activation_checkpointing=False, merge_mole=True, compile=True,
                  wigner_cuda=True, external_graph_gen=False, internal_graph_gen_version=2),
}


@pytest.mark.parametrize("name", sorted(SPEC_PRESETS))
def test_presets_are_the_spec_table(name):
    settings = resolve_settings(name)
    assert {key: getattr(settings, key) for key in SPEC_PRESETS[name]} == SPEC_PRESETS[name]
    assert settings.base_precision_dtype == torch.float32


def test_the_default_constructor_is_the_default_preset():
    assert InferenceSettings() == InferenceSettings.preset("default")
    custom = InferenceSettings(merge_mole=True, compile=True)
    assert resolve_settings(custom) is custom


@pytest.mark.parametrize("kwargs, message", [
    (dict(internal_graph_gen_version=3),
     r"internal_graph_gen_version=3 is not supported; use one of \(1, 2\)"),
    (dict(tf32=True, base_precision_dtype=torch.float64),
     r"tf32=True has no effect with base_precision_dtype=torch.float64.*set tf32=False"),
    (dict(compile="yes"), r"InferenceSettings.compile must be True or False, got 'yes'"),
    (dict(merge_mole=1), r"InferenceSettings.merge_mole must be True or False, got 1"),
    (dict(base_precision_dtype=torch.float16),
     r"base_precision_dtype=torch.float16 is not supported; use torch.float32 or torch.float64"),
])
def test_invalid_settings_name_the_field_and_the_fix(kwargs, message):
    with pytest.raises(InferenceSettingsError, match=message):
        InferenceSettings(**kwargs)


def test_unknown_preset_and_wrong_type_are_refused():
    with pytest.raises(InferenceSettingsError, match=r"unknown inference settings preset "
                                                     r"'fast'; known: \['default', 'turbo'\]"):
        resolve_settings("fast")
    with pytest.raises(InferenceSettingsError, match=r"preset name .* or an InferenceSettings, "
                                                     r"got dict"):
        resolve_settings({"tf32": True})


def test_tf32_is_switched_on_only_inside_the_block_and_restored():
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    with tf32_matmuls(True):
        assert matmul.fp32_precision == "tf32"
    assert matmul.fp32_precision == before
    with pytest.raises(KeyError):
        with tf32_matmuls(True):
            raise KeyError("inside")
    assert matmul.fp32_precision == before
    with tf32_matmuls(False):
        assert matmul.fp32_precision == before


@pytest.mark.parametrize("settings", [
    InferenceSettings.preset("default"),
    InferenceSettings.preset("turbo"),
    InferenceSettings(activation_checkpointing=False, internal_graph_gen_version=1,
                      base_precision_dtype=torch.float64),
])
def test_from_dict_and_from_json_invert_as_dict(settings, tmp_path):
    assert InferenceSettings.from_dict(settings.as_dict()) == settings
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings.as_dict()))
    assert InferenceSettings.from_json(path) == settings


def test_from_dict_keeps_the_default_preset_for_fields_left_out():
    settings = InferenceSettings.from_dict({"merge_mole": True})
    assert settings == dataclasses.replace(InferenceSettings.preset("default"), merge_mole=True)
