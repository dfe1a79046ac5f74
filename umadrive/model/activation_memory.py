"""How much memory a step's edge activations need, and the activation-checkpointing
chunk that keeps them within a budget.

Forces are the gradient of the energy, so a step keeps the forward pass's
intermediate tensors until the backward pass. For UMA nearly all of them are
per edge: in each layer the gathered node pairs, the rotated messages, the radial
weights, both SO(2) convolutions' outputs and the gates, each
``(E, n_edge_coefficients, channels)``. :func:`bytes_per_edge` estimates them from
the model's sizes (an upper bound: the constant below was calibrated against the
measured peak of a step, see ``benchmarks/activation_memory.py``).

The rule (:func:`checkpoint_chunk`): with ``InferenceSettings.activation_checkpointing``
on, a step whose estimated edge activations fit in the budget runs without
recomputation; a larger one is split into chunks of as many edges as fit, each
recomputed in the backward pass (about one more forward pass of the edge work).
The budget is ``memory_budget`` bytes if given, else half the memory free when the
unit is built (:func:`default_budget`).

A batch of several systems (path-integral beads, a screening batch) whose
activations exceed the budget is first split into groups of whole systems that
fit (:func:`system_groups`), evaluated one after another: the systems are
independent, so nothing is recomputed and a batch costs per system what a
smaller one does. Only a single system that does not fit on its own is chunked.

Without activation checkpointing (turbo) nothing is recomputed, with one
exception: a step whose estimated activations exceed all the memory free when the
unit was built (:func:`free_memory`) would be killed by the out-of-memory killer
(or fail on a GPU). A batch of several systems is split into groups that fit that
memory, as above, and stays compiled; a single system that does not fit runs in
chunks as above, with that memory as the budget, uncompiled, and with a warning.
Slower, but the run goes on.
"""

from __future__ import annotations

import bisect
import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from umadrive.model.config import BackboneConfig

#: Fraction of the free memory at start-up that the edge activations of a step may use.
DEFAULT_BUDGET_FRACTION = 0.5
#: The smallest chunk: below this, the per-chunk overhead (one node-sized sum) dominates.
MIN_CHUNK_EDGES = 4096
#: Per layer and edge coefficient, the tensors kept for the backward pass count about
#: 7 sphere-channel widths (pairs, rotated message and radial weights, 2C each; the
#: second convolution's output, C) and 3 hidden-channel widths (the first
#: convolution's output, the gates); plus 5 edge-channel widths of radial MLP.
#: ``_SLACK`` covers the backward pass's own temporaries; calibrated against the
#: resident-set peak of a step on CPU (``benchmarks/activation_memory.py``).
_SPHERE_TENSORS, _HIDDEN_TENSORS, _EDGE_TENSORS = 7, 3, 5
#: The edge rotations are built in float64 (:class:`~umadrive.model.so3.EdgeRotation`)
#: and kept for the backward pass: about four (K, K) float64 matrices per edge
#: (K = (lmax+1)**2: the assembled matrix, its reordered rows, the per-degree
#: blocks and their products). Negligible for UMA-S, a third of a small model's need.
_ROTATION_MATRICES = 4
_SLACK = 1.5


def bytes_per_edge(config: BackboneConfig, dtype: torch.dtype) -> int:
    """Estimated bytes of activations one edge keeps for the backward pass of a
    forces (and stress) step, over all layers."""
    coefficients = (config.lmax + 1) ** 2
    per_layer = coefficients * (_SPHERE_TENSORS * config.sphere_channels
                                + _HIDDEN_TENSORS * config.hidden_channels)
    per_layer += _EDGE_TENSORS * config.edge_channels
    shared = 2 * coefficients * coefficients + config.num_distance_basis + 2 * config.edge_channels
    rotation = _ROTATION_MATRICES * coefficients * coefficients * torch.float64.itemsize
    return int(_SLACK * (dtype.itemsize * (config.num_layers * per_layer + shared) + rotation))


def checkpoint_chunk(edges: int, per_edge: int, budget: int) -> int | None:
    """Edges per recomputed chunk for a step of ``edges`` edges, or None when the
    step's estimated activations (``edges * per_edge`` bytes) fit in ``budget``."""
    if edges * per_edge <= budget:
        return None
    return max(MIN_CHUNK_EDGES, budget // per_edge)


def system_groups(edges: Sequence[int], max_edges: int) -> list[range]:
    """Consecutive groups of the systems with ``edges[b]`` edges each: as few as
    keep every group within ``max_edges`` edges, cut where the running total of
    edges comes nearest to equal shares when such groups fit (32 equal beads, 5
    fitting at a time: 7 groups of 4 or 5), else filled in order. A system with
    more than ``max_edges`` edges forms a group of its own (to be chunked)."""
    if max_edges < 1:
        raise ValueError(f"max_edges must be at least 1, got {max_edges}")
    filled = _filled_groups(edges, max_edges)
    shared = _shared_groups(edges, len(filled))
    if all(len(group) == 1 or sum(edges[b] for b in group) <= max_edges for group in shared):
        return shared
    return filled


def _filled_groups(edges: Sequence[int], limit: int) -> list[range]:
    """Each group as many systems as fit ``limit`` edges, in order."""
    groups, start, total = [], 0, 0
    for index, count in enumerate(edges):
        if index > start and total + count > limit:
            groups.append(range(start, index))
            start, total = index, 0
        total += count
    groups.append(range(start, len(edges)))
    return groups


def _shared_groups(edges: Sequence[int], count: int) -> list[range]:
    """``count`` non-empty groups cut where the running total of edges is nearest
    to 1/count, 2/count, ... of all edges."""
    running = list(itertools.accumulate(edges))
    cuts = [0]
    for share in range(1, count):
        target = share * running[-1] / count
        # the first cut at or past the target, or the one before it if nearer
        cut = bisect.bisect_left(running, target) + 1
        if cut > 1 and target - running[cut - 2] < running[cut - 1] - target:
            cut -= 1
        # every group keeps at least one system
        cuts.append(min(max(cut, cuts[-1] + 1), len(edges) - (count - share)))
    cuts.append(len(edges))
    return [range(low, high) for low, high in zip(cuts[:-1], cuts[1:])]


def default_budget(device: torch.device) -> int:
    """Bytes: :data:`DEFAULT_BUDGET_FRACTION` of :func:`free_memory`."""
    return int(DEFAULT_BUDGET_FRACTION * free_memory(device))


def free_memory(device: torch.device) -> int:
    """Bytes free now on ``device`` (CUDA: the device's free memory; CPU: the
    system's available memory, from ``/proc/meminfo`` where there is one, else its
    physical memory)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return _available_system_memory()


def _available_system_memory() -> int:
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
