"""fairchem's ``pretrained_mlip.get_predict_unit``, same parameters in the same
order, so that fairchem scripts run with only their import line changed::

    from umadrive import FAIRChemCalculator, pretrained_mlip

    predictor = pretrained_mlip.get_predict_unit("uma-s-1p1", device="cuda")
    calc = FAIRChemCalculator(predictor, task_name="omat")

What differs from fairchem: ``workers`` must be 1 (one process, one device; run
one ``umadrive serve`` per device instead), ``gp_config`` must be None, and
``seed`` has nothing to seed (inference here draws no random numbers).
"""

from __future__ import annotations

import dataclasses
import os

from umadrive.model.devices import pick_device
from umadrive.model.names import resolve_model
from umadrive.model.predictor import PredictUnit
from umadrive.model.predictor import get_predict_unit as _load_predict_unit
from umadrive.model.settings import InferenceSettings, InferenceSettingsError, resolve_settings

__all__ = ["get_predict_unit"]


def get_predict_unit(model_name: str | os.PathLike,
                     inference_settings: InferenceSettings | str = "default",
                     overrides: dict | None = None, device: str | None = None,
                     cache_dir: str | os.PathLike | None = None, workers: int = 1,
                     seed: int = 41, gp_config: None = None) -> PredictUnit:
    """A :class:`~umadrive.model.predictor.PredictUnit` for a model name
    (``uma-s-1p1``, ``uma-s-1p1.pt``, ``demo``) or checkpoint path.

    inference_settings: "default", "turbo" or an :class:`InferenceSettings`.
    overrides: fields of the settings to replace, e.g. ``{"compile": False}``.
    device: "cpu", "cuda", "cuda:N"; None: CUDA when torch sees a GPU, else CPU
        (logged). A device torch cannot use raises DeviceUnavailableError.
    cache_dir: a folder searched first for the checkpoint, and where a download
        goes (default: the caches of :mod:`umadrive.model.names`).
    workers: must be 1. seed: accepted for fairchem's signature (an int); has
        no effect. gp_config: must be None (no graph parallelism).
    """
    if workers != 1:
        raise ValueError(f"workers={workers!r}: umadrive's predict unit runs in this process "
                         "on one device; use workers=1 (for several GPUs run one "
                         "`umadrive serve --device cuda:N` per device)")
    if gp_config is not None:
        raise ValueError("gp_config: graph-parallel inference is not supported by umadrive; "
                         "leave gp_config=None")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    settings = resolve_settings(inference_settings)
    if overrides:
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(InferenceSettings)})
        if unknown:
            raise InferenceSettingsError(
                f"overrides {unknown} are not InferenceSettings fields; known: "
                f"{[f.name for f in dataclasses.fields(InferenceSettings)]}")
        settings = dataclasses.replace(settings, **overrides)
    return _load_predict_unit(resolve_model(model_name, cache_dir=cache_dir),
                              pick_device(device), settings)
