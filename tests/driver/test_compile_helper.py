"""The UMA backend's background compile on a cache miss: ``umadrive compile`` in a
helper process at the lowest CPU priority fills the cache, the backend loads the
entry (nothing compiled in the serving process) and then answers as the
uncompiled model does."""

from __future__ import annotations

import logging

import pytest
import torch

from umadrive.driver.backends import UmaOptions
from umadrive.driver.backends.uma import UmaBackend
from umadrive.model.predictor import System, get_predict_unit
from umadrive.model.settings import InferenceSettings
from umadrive.structure import Structure
from umadrive.testing import tolerance

from tests.reference import UMA_S1P1, assert_prediction_close, cu3au_8


@pytest.mark.slow
def test_a_cold_background_compile_runs_in_a_helper_process(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("UMADRIVE_CACHE", str(tmp_path / "cache"))
    template = cu3au_8()
    backend = UmaBackend.load(str(UMA_S1P1), template, UmaOptions(task="omat", mode="turbo"))
    with caplog.at_level(logging.INFO):
        warm_up = backend.warm_up(background=True)
        assert warm_up.wait(timeout=1200), "the compile helper did not finish"
    assert warm_up.error is None, warm_up.summary()
    assert warm_up.cache_hit and not warm_up.stored, warm_up.summary()
    assert "compiling the model in a helper process (pid" in caplog.text
    assert "failed" not in caplog.text
    assert list((tmp_path / "cache" / "compiled").iterdir())

    structure = Structure.from_atoms(template)
    eager = get_predict_unit(UMA_S1P1, inference_settings=InferenceSettings(
        activation_checkpointing=False, merge_mole=True))
    expected = eager.predict([System(template.numbers, structure, "omat", 0, 0)])[0]
    assert_prediction_close(backend.compute([structure])[0], expected, tolerance(torch.float32),
                            len(template))
    assert backend.unit.stats.uncompiled_calls == 0  # the switch happened before this call
