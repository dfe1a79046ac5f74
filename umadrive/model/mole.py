"""Mixture of linear experts (MoLE): a linear layer whose weight is a per-system
mixture of expert weights, ``W = sum_e alpha_e W_e`` (the bias is shared).

UMA routes each system of a batch to its own mixture (coefficients from the
system's composition, charge, spin and task); the rows of the input belong to
the systems in order, ``routing.counts[b]`` rows for system ``b``.

A layer can also hold one *merged* weight (``merge``), for a fixed mixture:
``forward(x, None)`` then is a plain linear layer. The expert weights stay, so
merging again for another mixture costs one weighted sum.

Routed calls keep their last mixture: an MD run asks for the same systems at
every step, so the weighted sum over the experts (for UMA-S, reading every
expert weight, about 1 GB) is done again only when the coefficients or the
expert weights change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class ExpertRouting:
    """How the rows of an edge tensor map onto mixtures.

    coefficients: (B, n_experts) mixing coefficients per system (or run of systems).
    counts: rows (edges) per system, in row order; sums to the number of rows.
    :meth:`grouped` joins consecutive systems of equal coefficients into one.
    """

    coefficients: torch.Tensor
    counts: tuple[int, ...]

    @classmethod
    def grouped(cls, coefficients: torch.Tensor, counts: tuple[int, ...]) -> "ExpertRouting":
        """The routing of systems ``coefficients`` (B, n_experts) with ``counts`` rows
        each, where consecutive systems with equal coefficients (path-integral beads,
        a batch of one material) share one mixture: one matrix product for all of
        their rows instead of one per system."""
        if coefficients.shape[0] < 2:
            return cls(coefficients, counts)
        same = (coefficients[1:] == coefficients[:-1]).all(dim=1).tolist()
        kept, merged = [0], [counts[0]]
        for system, equal in enumerate(same, start=1):
            if equal:
                merged[-1] += counts[system]
            else:
                kept.append(system)
                merged.append(counts[system])
        if len(kept) == len(counts):
            return cls(coefficients, counts)
        return cls(coefficients[kept], tuple(merged))

    def rows(self, start: int, stop: int) -> "ExpertRouting":
        """The routing of rows ``start:stop`` (a chunk of the edges)."""
        if len(self.counts) == 1:
            return self
        coefficients, counts, first = [], [], 0
        for system, count in enumerate(self.counts):
            low, high = max(start, first), min(stop, first + count)
            if high > low:
                coefficients.append(system)
                counts.append(high - low)
            first += count
        return ExpertRouting(self.coefficients[coefficients], tuple(counts))


class MixtureOfLinearExperts(nn.Module):
    """``y = x (sum_e alpha_e W_e)^T + b`` with ``weights`` (n_experts, out, in).

    ``merged_weight(alpha)`` gives the plain (out, in) weight for one mixture;
    ``merge(alpha)`` keeps it in the layer (``merged``), and ``forward(x, None)``
    then uses it instead of mixing the experts.
    """

    def __init__(self, num_experts: int, in_features: int, out_features: int, *,
                 bias: bool) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.num_experts = num_experts
        self.in_features = in_features
        self.out_features = out_features
        bound = 1 / math.sqrt(in_features)
        self.weights = nn.Parameter(
            torch.empty(num_experts, out_features, in_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound)) if bias else None
        self.register_buffer("merged", None, persistent=False)
        # (coefficients, version of the expert weights, their mixture) of the last routed call
        self._last_mixture: tuple[torch.Tensor, int, torch.Tensor] | None = None

    def merged_weight(self, coefficients: torch.Tensor) -> torch.Tensor:
        """(out, in) weight of the mixture with ``coefficients`` (n_experts,); a new
        tensor, never the routed calls' kept mixture."""
        return self._mix(coefficients[None])[0]

    def mixed_weights(self, coefficients: torch.Tensor) -> torch.Tensor:
        """(B, out, in) weights of the mixtures with ``coefficients`` (B, n_experts);
        the last one again when neither the coefficients nor the expert weights
        changed since (not while compiling or when the mixture needs gradients)."""
        if (torch.compiler.is_compiling() or coefficients.requires_grad
                or self.weights.requires_grad):
            return self._mix(coefficients)
        last, version = self._last_mixture, self.weights._version
        if (last is not None and last[1] == version and last[0].shape == coefficients.shape
                and torch.equal(last[0], coefficients)):
            return last[2]
        mixed = self._mix(coefficients)
        self._last_mixture = (coefficients.clone(), version, mixed)
        return mixed

    def _mix(self, coefficients: torch.Tensor) -> torch.Tensor:
        return torch.einsum("be,eoi->boi", coefficients.to(self.weights.dtype), self.weights)

    def merge(self, coefficients: torch.Tensor) -> None:
        """Keep the weight of the mixture ``coefficients`` (n_experts,) as ``merged``."""
        self.merged = self.merged_weight(coefficients).detach()

    def weights_for(self, routing: ExpertRouting | None) -> torch.Tensor:
        """(B, out, in): each system's mixture, or for ``routing=None`` the merged weight (B = 1)."""
        if routing is None:
            if self.merged is None:
                raise RuntimeError("MixtureOfLinearExperts called without routing before merge()")
            return self.merged[None]
        return self.mixed_weights(routing.coefficients)

    def forward(self, x: torch.Tensor, routing: ExpertRouting | None) -> torch.Tensor:
        """x: (rows, in) -> (rows, out); ``routing=None``: the merged weight."""
        return linear_per_system(x, self.weights_for(routing), self.bias,
                                 None if routing is None else routing.counts)

    def extra_repr(self) -> str:
        return (f"num_experts={self.num_experts}, in_features={self.in_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")


def linear_per_system(x: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor | None,
                      counts: tuple[int, ...] | None) -> torch.Tensor:
    """Rows of ``x`` (rows, in) times the weight (out, in) of their system, ``weights``
    (B, out, in), ``counts[b]`` consecutive rows per system (None: one system); plus ``bias``."""
    if counts is None or len(counts) == 1:
        return F.linear(x, weights[0], bias)
    parts = x.split(list(counts))
    return torch.cat([F.linear(part, weights[b], bias) for b, part in enumerate(parts)])
