"""The potential: UMA architecture, checkpoints, inference settings, predictor and
ASE calculator. Knows nothing about sockets.

Public API: ``get_predict_unit``, ``InferenceSettings``, ``UMACalculator`` (also
importable from ``umadrive``), plus ``System`` and ``PredictUnit``; fairchem's
names ``pretrained_mlip`` and ``FAIRChemCalculator`` for scripts written for it.
"""

from umadrive.model.calculator import FAIRChemCalculator, UMACalculator
from umadrive.model.predictor import PredictUnit, System, get_predict_unit
from umadrive.model.settings import InferenceSettings

__all__ = ["get_predict_unit", "InferenceSettings", "UMACalculator", "FAIRChemCalculator",
           "PredictUnit", "System"]
