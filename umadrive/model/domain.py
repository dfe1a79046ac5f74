"""Element domains: the elements a model declares it was trained on.

A checkpoint declares them per task: a task config (see
:mod:`umadrive.model.checkpoint`) may carry ``"elements"``, a list of chemical
symbols, and then every dataset the task serves is limited to them. The demo
model declares its seven metals this way; official UMA checkpoints declare
nothing and keep their full range of elements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

TASK_KEY = "elements"


class ElementDomainError(ValueError):
    """A checkpoint whose element declaration cannot be read."""


class ElementDomain:
    """Per dataset, the atomic numbers a model may be asked about; a dataset
    absent from ``allowed`` has no restriction."""

    def __init__(self, allowed: Mapping[str, Iterable[int]] | None = None) -> None:
        self.allowed = {dataset: frozenset(int(z) for z in numbers)
                        for dataset, numbers in (allowed or {}).items()}

    @classmethod
    def from_tasks(cls, tasks_config: Iterable[Mapping]) -> ElementDomain:
        """The domain a checkpoint's ``tasks_config`` declares (intersected over
        the tasks of one dataset when several declare one)."""
        allowed: dict[str, frozenset[int]] = {}
        for task in tasks_config:
            if task.get(TASK_KEY) is None:
                continue
            numbers = frozenset(_atomic_number(symbol, task.get("name")) for symbol in task[TASK_KEY])
            for dataset in task.get("datasets", []):
                allowed[dataset] = allowed.get(dataset, numbers) & numbers
        return cls(allowed)

    def outside(self, numbers: np.ndarray, dataset: str) -> list[int]:
        """The distinct atomic numbers of ``numbers`` outside the domain of
        ``dataset``, sorted (empty when all are inside or nothing is declared)."""
        allowed = self.allowed.get(dataset)
        if allowed is None:
            return []
        return sorted({int(z) for z in np.unique(numbers)} - allowed)

    def describe(self, dataset: str) -> str:
        """The allowed elements of ``dataset`` as symbols, e.g. ``"Cu, Ag"``."""
        return ", ".join(chemical_symbols[z] for z in sorted(self.allowed.get(dataset, ())))


def _atomic_number(symbol: object, task: object) -> int:
    if not isinstance(symbol, str) or symbol not in atomic_numbers or symbol == "X":
        raise ElementDomainError(f"task {task!r} declares {symbol!r} among its {TASK_KEY!r}; "
                                 "expected chemical symbols like 'Cu'")
    return atomic_numbers[symbol]
