"""The two CUDA-only inference settings: TF32 matmuls and CUDA-graph Wigner matrices.

Both are inactive on other devices (the predictor reports that); nothing here
changes process-wide state beyond the duration of one call.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Callable, Iterator

import torch

log = logging.getLogger(__name__)


@contextlib.contextmanager
def tf32_matmuls(active: bool) -> Iterator[None]:
    """CUDA float32 matmuls in TF32 inside the block when ``active``; the previous
    setting is restored on the way out (also on an exception)."""
    if not active:
        yield
        return
    matmul = torch.backends.cuda.matmul
    previous = matmul.fp32_precision
    matmul.fp32_precision = "tf32"
    try:
        yield
    finally:
        matmul.fp32_precision = previous


class GraphedRotation:
    """Per-edge Wigner matrices replayed from CUDA graphs (``wigner_cuda``).

    ``rotation``: edge vectors (E, 3) -> (E, n_edge, n_node), e.g. the backbone's
    :class:`~umadrive.model.so3.EdgeRotation`. A CUDA graph has fixed shapes, so the
    edges are padded to a capacity (``growth`` times the edge count that outgrew
    the last one, at least ``min_capacity``) with the harmless vector (1, 0, 0);
    the graph, forward and backward (``torch.cuda.make_graphed_callables``), is
    captured again only when a call has more edges than the capacity. ``captures``
    counts the captures.
    """

    def __init__(self, rotation: Callable[[torch.Tensor], torch.Tensor], *,
                 growth: float = 1.2, min_capacity: int = 4096) -> None:
        if growth < 1:
            raise ValueError(f"growth must be >= 1, got {growth}")
        self.rotation = rotation
        self.growth = growth
        self.min_capacity = min_capacity
        self.capacity = 0
        self.captures = 0
        self._graphed: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __call__(self, edge_vectors: torch.Tensor) -> torch.Tensor:
        if not edge_vectors.requires_grad:  # energy only: nothing worth a graph
            return self.rotation(edge_vectors)
        edges = edge_vectors.shape[0]
        if self._graphed is None or edges > self.capacity:
            self.capacity = max(self.min_capacity, math.ceil(edges * self.growth))
            sample = torch.ones(self.capacity, 3, dtype=edge_vectors.dtype,
                                device=edge_vectors.device, requires_grad=True)
            self._graphed = torch.cuda.make_graphed_callables(
                lambda vectors: self.rotation(vectors), (sample,))
            self.captures += 1
            log.info("captured the Wigner-matrix CUDA graph for up to %d edges (capture %d)",
                     self.capacity, self.captures)
        filler = edge_vectors.new_tensor((1.0, 0.0, 0.0)).expand(self.capacity - edges, 3)
        return self._graphed(torch.cat((edge_vectors, filler)))[:edges]
