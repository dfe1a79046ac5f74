"""umadrive: a long-running i-PI-protocol force server for UMA-family potentials.

The model API (``get_predict_unit``, ``InferenceSettings``, ``UMACalculator``,
and fairchem's names ``pretrained_mlip`` and ``FAIRChemCalculator``, so that
``from umadrive import pretrained_mlip, FAIRChemCalculator`` replaces
``from fairchem.core import ...``) needs torch and is imported lazily, so ``umadrive.protocol`` stays usable
without it.
"""

from __future__ import annotations

__version__ = "0.1.0"

_MODEL_API = {
    "get_predict_unit": "umadrive.model",
    "InferenceSettings": "umadrive.model",
    "UMACalculator": "umadrive.model",
    "FAIRChemCalculator": "umadrive.model",
    "pretrained_mlip": "umadrive.model",
}

__all__ = ["__version__", *_MODEL_API]


def __getattr__(name: str):
    if name in _MODEL_API:
        import importlib

        return getattr(importlib.import_module(_MODEL_API[name]), name)
    raise AttributeError(f"module 'umadrive' has no attribute {name!r}")
