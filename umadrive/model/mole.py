"""Mixture of linear experts (MoLE): a linear layer whose weight is a per-system
mixture of expert weights, ``W = sum_e alpha_e W_e`` (the bias is shared).

UMA routes each system of a batch to its own mixture (coefficients from the
system's composition, charge, spin and task); the rows of the input belong to
the systems in order, ``routing.counts[b]`` rows for system ``b``.
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

    coefficients: (B, n_experts) mixing coefficients per system.
    counts: rows (edges) per system, in row order; sums to the number of rows.
    """

    coefficients: torch.Tensor
    counts: tuple[int, ...]


class MixtureOfLinearExperts(nn.Module):
    """``y = x (sum_e alpha_e W_e)^T + b`` with ``weights`` (n_experts, out, in).

    ``merged_weight(alpha)`` gives the plain (out, in) weight for one mixture, so a
    caller can replace the mixture by an ordinary linear layer for a fixed system.
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

    def merged_weight(self, coefficients: torch.Tensor) -> torch.Tensor:
        """(out, in) weight of the mixture with ``coefficients`` (n_experts,)."""
        return self.mixed_weights(coefficients[None])[0]

    def mixed_weights(self, coefficients: torch.Tensor) -> torch.Tensor:
        """(B, out, in) weights of the mixtures with ``coefficients`` (B, n_experts)."""
        return torch.einsum("be,eoi->boi", coefficients.to(self.weights.dtype), self.weights)

    def forward(self, x: torch.Tensor, routing: ExpertRouting) -> torch.Tensor:
        """x: (rows, in) -> (rows, out)."""
        return linear_per_system(x, self.mixed_weights(routing.coefficients), self.bias,
                                 routing.counts)

    def extra_repr(self) -> str:
        return (f"num_experts={self.num_experts}, in_features={self.in_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")


def linear_per_system(x: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor | None,
                      counts: tuple[int, ...]) -> torch.Tensor:
    """Rows of ``x`` (rows, in) times the weight (out, in) of their system, ``weights``
    (B, out, in), ``counts[b]`` consecutive rows per system; plus ``bias``."""
    if len(counts) == 1:
        return F.linear(x, weights[0], bias)
    parts = x.split(list(counts))
    return torch.cat([F.linear(part, weights[b], bias) for b, part in enumerate(parts)])
