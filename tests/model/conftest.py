"""Fixtures for the model tests (the pieces behind them are in :mod:`tests.model.helpers`)."""

from __future__ import annotations

import pytest

from tests.model.helpers import checkpoint_path, predict_unit, reference_cases


@pytest.fixture(scope="session")
def uma_unit():
    """``uma_unit(name, dtype=torch.float64)``: a cached predict unit of a committed checkpoint."""
    return predict_unit


@pytest.fixture(scope="session")
def uma_cases():
    """``uma_cases(name)``: the reference structures and fairchem's answers."""
    return reference_cases


@pytest.fixture(scope="session")
def uma_checkpoint_path():
    """``uma_checkpoint_path(name)``: path of a committed checkpoint."""
    return checkpoint_path
