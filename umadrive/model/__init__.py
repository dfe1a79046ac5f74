"""The potential: UMA architecture, checkpoints, inference settings, predictor and
ASE calculator. Knows nothing about sockets.

Public API: ``get_predict_unit``, ``InferenceSettings``, ``UMACalculator`` (also
importable from ``umadrive``), plus ``System`` and ``PredictUnit``.
"""

from umadrive.model.calculator import UMACalculator
from umadrive.model.predictor import PredictUnit, System, get_predict_unit
from umadrive.model.settings import InferenceSettings

__all__ = ["get_predict_unit", "InferenceSettings", "UMACalculator", "PredictUnit", "System"]
