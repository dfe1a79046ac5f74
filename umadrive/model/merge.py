"""Merged experts (``merge_mole``): one plain weight per MoLE layer for a fixed system.

UMA mixes its experts with coefficients that depend only on a system's
composition, charge, spin and task. For MD the system is fixed, so every
:class:`~umadrive.model.mole.MixtureOfLinearExperts` can hold the mixed weight
once (``merge``) and run as a plain linear layer. :class:`ExpertMerger` keeps
track of which system the merged weights belong to and merges again when a
batch of another system arrives; the expert weights are never touched, so a
re-merge costs one weighted sum per layer.

What identifies the mixture (:class:`MergeKey`): the *reduced* composition
(element counts divided by their greatest common divisor, so a supercell or a
batch of path-integral beads of one system shares the key), charge, spin and
task. UMA 1.0 and UMA-S-1.2 average the composition over n + 1 atoms, so there
the atom count is part of the key too. For UMA 1.2+ the energy head's experts
(one per dataset) are merged too: the task's expert becomes the plain weight.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from umadrive.model.heads import ExpertHead
from umadrive.model.mole import MixtureOfLinearExperts
from umadrive.model.uma import UMA

log = logging.getLogger(__name__)

# distinct systems whose merge keys ExpertMerger.key_of keeps
_KEYS_KEPT = 256


@dataclass(frozen=True)
class MergeKey:
    """composition: ((Z, reduced count), ...) sorted by Z. atoms: the atom count
    where the model's mixture depends on it (UMA 1.0, UMA-S-1.2), else None."""

    composition: tuple[tuple[int, int], ...]
    charge: int
    spin: int
    task: str
    atoms: int | None = None

    def __str__(self) -> str:
        from ase.data import chemical_symbols

        formula = "".join(f"{chemical_symbols[z]}{n if n > 1 else ''}"
                          for z, n in self.composition)
        size = f", {self.atoms} atoms" if self.atoms is not None else ""
        return f"{formula} (charge {self.charge}, spin {self.spin}, task {self.task}{size})"


def merge_key(numbers: np.ndarray, charge: int, spin: int, task: str, *,
              count_matters: bool) -> MergeKey:
    """The key of one system; numbers: (n,) atomic numbers. count_matters: the
    model's mixture depends on the atom count (UMA 1.0, UMA-S-1.2)."""
    elements, counts = np.unique(np.asarray(numbers), return_counts=True)
    divisor = math.gcd(*(int(n) for n in counts))
    return MergeKey(composition=tuple((int(z), int(n) // divisor)
                                      for z, n in zip(elements, counts)),
                    charge=int(charge), spin=int(spin), task=task,
                    atoms=len(numbers) if count_matters else None)


class ExpertMerger:
    """Owns the merged weights of one model (backbone experts and head experts).

    ``ensure(key, numbers, charge, spin, task)`` merges for ``key`` unless the
    weights already belong to it; ``merges`` counts the merges done. ``key_of``
    remembers the keys of the systems it has seen (the same beads every step).
    """

    def __init__(self, model: UMA) -> None:
        self.model = model
        self.backbone = model.backbone
        self.layers = [module for module in self.backbone.modules()
                       if isinstance(module, MixtureOfLinearExperts)]
        self.key: MergeKey | None = None
        self.merges = 0
        self._keys: dict[tuple, MergeKey] = {}

    @property
    def count_matters(self) -> bool:
        return self.backbone.config.composition_includes_self

    def key_of(self, numbers: np.ndarray, charge: int, spin: int, task: str) -> MergeKey:
        numbers = np.asarray(numbers)
        seen = (numbers.dtype.str, numbers.tobytes(), int(charge), int(spin), task)
        key = self._keys.get(seen)
        if key is None:
            if len(self._keys) >= _KEYS_KEPT:
                self._keys.clear()
            key = self._keys[seen] = merge_key(numbers, charge, spin, task,
                                               count_matters=self.count_matters)
        return key

    def ensure(self, key: MergeKey, numbers: torch.Tensor, charge: int, spin: int,
               task: str) -> bool:
        """Merge the experts for one system (numbers: (n,) long on the model's device)
        unless they already are merged for ``key``; True when it merged now."""
        if key == self.key:
            return False
        started = time.perf_counter()
        device = numbers.device
        with torch.no_grad():
            system = self.backbone.system_embedding(
                torch.tensor([charge], device=device), torch.tensor([spin], device=device),
                (task,))
            batch = torch.zeros_like(numbers)
            coefficients = self.backbone.expert_coefficients(numbers, batch, system)[0]
            for layer in self.layers:
                layer.merge(coefficients)
            if isinstance(self.model.head, ExpertHead):
                self.model.head.merge(self.model.head_expert(task))
        previous, self.key = self.key, key
        self.merges += 1
        log.info("merged the experts for %s%s in %.3f s (merge %d)", key,
                 "" if previous is None else f", was {previous}",
                 time.perf_counter() - started, self.merges)
        return True


def common_key(keys: Sequence[MergeKey]) -> MergeKey | None:
    """The one key all systems of a batch share, or None for a mixed batch."""
    first = keys[0]
    return first if all(key == first for key in keys[1:]) else None
