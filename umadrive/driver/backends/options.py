"""How a UMA model is loaded and asked: the ``umadrive serve`` model flags."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class UmaOptions:
    """How a UMA model is loaded and asked (``umadrive serve`` flags).

    task: the model dataset to predict for (``omat``, ``omol``, ...); None is
        allowed when the model has only one.
    charge: total charge (e). spin: spin multiplicity; None means the model's
        default for the task (:func:`umadrive.model.calculator.default_spin`).
    mode: ``default``, ``turbo`` or the path of a JSON file of
        :class:`~umadrive.model.settings.InferenceSettings` fields; for a
        ``fairchem:`` model also a fairchem preset name, and the JSON file holds
        fairchem's fields (:mod:`umadrive.driver.backends.fairchem`).
    device: ``cpu``, ``cuda`` or ``cuda:N``.
    memory_budget: bytes a step's edge activations may take before activation
        checkpointing recomputes them in chunks (umadrive's UMA backend with
        ``activation_checkpointing`` only); None: half the free memory at start.
    """

    task: str | None = None
    charge: int = 0
    spin: int | None = None
    mode: str = "default"
    device: str = "cpu"
    memory_budget: int | None = None


def choose_task(model: str, datasets: list[str], task: str | None) -> str:
    """``task``, or the model's only dataset when ``task`` is None (ValueError when
    the model has several). Whether ``task`` is one of them is the backend's check."""
    if task is not None:
        return task
    if len(datasets) != 1:
        raise ValueError(f"--task is required: {model} predicts for {datasets} (e.g. "
                         "omat for inorganic materials, omol for molecules)")
    return datasets[0]
