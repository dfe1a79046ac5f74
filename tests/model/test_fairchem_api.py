"""fairchem's inference snippets run with only their import line changed.

The three snippets below are copied verbatim from fairchem's inference-settings
document ("Inference using ASE and Predictor Interface"). Each test swaps the
import lines (nothing else) and runs the snippet with the model name
``uma-s-1`` found in the umadrive cache, which holds either the bundled demo
model or the tiny UMA 1.1 fixture. The snippets ask for ``device="cuda"``: on a
machine where torch has no CUDA, the snippet as written must fail with a clear
error, and it is run a second time with ``"cuda"`` replaced by ``"cpu"``.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

from umadrive import FAIRChemCalculator, InferenceSettings, pretrained_mlip
from umadrive.model.devices import DeviceUnavailableError
from umadrive.model.names import BUNDLED_MODELS, ModelNotFoundError
from umadrive.model.settings import InferenceSettingsError
from umadrive.testing import tolerance

from tests.model.helpers import reference_cases
from tests.reference import UMA_S1P1

DEFAULT_SNIPPET = '''
from __future__ import annotations

from fairchem.core import FAIRChemCalculator, pretrained_mlip

predictor = pretrained_mlip.get_predict_unit("uma-s-1", device="cuda")
calc = FAIRChemCalculator(predictor, task_name="oc20")
'''

TURBO_SNIPPET = '''
predictor = pretrained_mlip.get_predict_unit(
    "uma-s-1", device="cuda", inference_settings="turbo"
)
'''

CUSTOM_SNIPPET = '''
from fairchem.core.units.mlip_unit.api.inference import InferenceSettings

settings = InferenceSettings(
    tf32=True,
    activation_checkpointing=False,
    merge_mole=True,
    compile=True,
    wigner_cuda=True,
    external_graph_gen=False,
    internal_graph_gen_version=2,
)

predictor = pretrained_mlip.get_predict_unit(
    "uma-s-1", device="cuda", inference_settings=settings
)
'''

IMPORTS = {
    "from fairchem.core import FAIRChemCalculator, pretrained_mlip":
        "from umadrive import FAIRChemCalculator, pretrained_mlip",
    "from fairchem.core.units.mlip_unit.api.inference import InferenceSettings":
        "from umadrive import InferenceSettings",
}

MODELS = {"demo": BUNDLED_MODELS["demo"], "uma_s1p1": UMA_S1P1}
CUDA = torch.cuda.is_available()

# What the seed document says each snippet's settings are.
TURBO = dict(tf32=True, activation_checkpointing=False, merge_mole=True, compile=True,
             wigner_cuda=True, external_graph_gen=False, internal_graph_gen_version=2)


def swap_imports(snippet: str) -> str:
    swapped = snippet
    for fairchem_line, umadrive_line in IMPORTS.items():
        swapped = swapped.replace(fairchem_line, umadrive_line)
    assert "fairchem" not in swapped
    return swapped


def run_snippet(snippet: str, namespace: dict | None = None) -> dict:
    """Run ``snippet`` with its imports swapped; on a machine without CUDA, first
    check that the snippet as written fails clearly, then run it on the CPU."""
    namespace = {} if namespace is None else namespace
    code = swap_imports(snippet)
    if not CUDA:
        with pytest.raises(DeviceUnavailableError, match=r"device='cuda'.*use device='cpu'"):
            exec(code, dict(namespace))
        code = code.replace('device="cuda"', 'device="cpu"')
    exec(code, namespace)
    return namespace


@pytest.fixture(params=sorted(MODELS))
def cached_as_uma_s_1(request, tmp_path, monkeypatch):
    """The umadrive cache holding ``uma-s-1.pt``: the demo model or the fixture."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "uma-s-1.pt").symlink_to(MODELS[request.param])
    monkeypatch.setenv("UMADRIVE_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return request.param


def test_default_snippet(cached_as_uma_s_1):
    if cached_as_uma_s_1 == "demo":  # the demo model has the task omat only
        with pytest.raises(ValueError, match=r"task_name='oc20'.*choose one of \['omat'\]"):
            run_snippet(DEFAULT_SNIPPET)
        return
    calc = run_snippet(DEFAULT_SNIPPET)["calc"]
    (label, system, answer), = [case for case in reference_cases("s1p1") if case[1].task == "oc20"]
    atoms = _atoms(system)
    tol = tolerance(torch.float32)
    assert abs(calc.get_potential_energy(atoms) - answer["energy"]) <= tol.energy_per_atom * len(atoms)
    np.testing.assert_allclose(calc.get_forces(atoms), answer["forces"], atol=tol.forces)


def _atoms(system):
    from ase import Atoms

    return Atoms(numbers=system.numbers, positions=system.structure.positions,
                 cell=system.structure.cell, pbc=system.structure.pbc)


def test_turbo_snippet(cached_as_uma_s_1):
    predictor = run_snippet(TURBO_SNIPPET, {"pretrained_mlip": pretrained_mlip})["predictor"]
    assert predictor.settings == InferenceSettings(**TURBO)
    assert predictor.device.type == ("cuda" if CUDA else "cpu")


def test_custom_settings_snippet(cached_as_uma_s_1):
    predictor = run_snippet(CUSTOM_SNIPPET, {"pretrained_mlip": pretrained_mlip})["predictor"]
    assert predictor.settings.as_dict() == {**TURBO, "base_precision_dtype": "float32"}


def test_from_model_checkpoint_matches_fairchem():
    calc = FAIRChemCalculator.from_model_checkpoint(str(UMA_S1P1), task_name="omat",
                                                    device="cpu")
    assert calc.predictor is calc.predict_unit and calc.task_name == "omat"
    tol = tolerance(torch.float32)
    for label, system, answer in reference_cases("s1p1"):
        if system.task != "omat":
            continue
        atoms = _atoms(system)
        assert abs(calc.get_potential_energy(atoms) - answer["energy"]) \
            <= tol.energy_per_atom * len(atoms), label
        np.testing.assert_allclose(calc.get_forces(atoms), answer["forces"], atol=tol.forces,
                                   err_msg=label)


def test_task_name_defaults_to_the_only_task_and_is_required_otherwise():
    assert FAIRChemCalculator.from_model_checkpoint("demo", device="cpu").task_name == "omat"
    unit = pretrained_mlip.get_predict_unit(UMA_S1P1, device="cpu")
    with pytest.raises(ValueError, match=r"task_name is needed.*'omat'"):
        FAIRChemCalculator(unit)


def test_positional_order_is_fairchems():
    """model_name, inference_settings, overrides, device, cache_dir, workers, seed."""
    unit = pretrained_mlip.get_predict_unit(UMA_S1P1, "turbo", {"compile": False}, "cpu", None,
                                            1, 41)
    assert unit.settings == InferenceSettings(**{**TURBO, "compile": False})
    assert unit.device == torch.device("cpu")


def test_device_none_picks_and_says_which(caplog):
    with caplog.at_level(logging.WARNING):
        unit = pretrained_mlip.get_predict_unit("demo")
    expected = "cuda" if CUDA else "cpu"
    assert unit.device.type == expected
    assert f"device was not given: using {expected}" in caplog.text


def test_cache_dir_and_names_with_pt(tmp_path, monkeypatch):
    monkeypatch.setenv("UMADRIVE_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "uma-s-1p1.pt").symlink_to(UMA_S1P1)
    for name in ("uma-s-1p1", "uma-s-1p1.pt"):
        unit = pretrained_mlip.get_predict_unit(name, device="cpu",
                                                cache_dir=str(tmp_path / "mine"))
        assert "omol" in unit.datasets


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(workers=2), ValueError, r"workers=2.*use workers=1"),
    (dict(gp_config={}), ValueError, r"gp_config.*leave gp_config=None"),
    (dict(overrides={"turbo": True}), InferenceSettingsError, r"\['turbo'\] are not"),
    (dict(device="cuda:x"), DeviceUnavailableError, r"'cuda:x' is not a torch device"),
])
def test_refused_arguments_say_why(kwargs, error, match):
    with pytest.raises(error, match=match):
        pretrained_mlip.get_predict_unit("demo", **{"device": "cpu", **kwargs})


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
def test_cuda_on_a_cpu_machine_is_a_clear_error():
    with pytest.raises(DeviceUnavailableError, match=r"device='cuda'.*use device='cpu'"):
        pretrained_mlip.get_predict_unit("demo", device="cuda")


def test_a_missing_path_says_no_such_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"no such file: '.*nope\.pt'"):
        pretrained_mlip.get_predict_unit(os.fspath(tmp_path / "nope.pt"), device="cpu")
