"""The interface every backend provides to the serving loop."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from umadrive.structure import Prediction, Structure


class Backend(Protocol):
    """Computes predictions; the species and atom order are those of the
    template the backend was built with."""

    name: str

    def compute(self, structures: Sequence[Structure]) -> list[Prediction]:
        """One prediction per structure (eV, eV/Å, eV/Å³), all in one call."""
        ...

    def device_memory_bytes(self) -> int | None:
        """Memory the backend holds on its accelerator; None on the CPU."""
        ...
