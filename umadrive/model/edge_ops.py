"""The per-edge work of the message passing that torch's own operators and
``torch.compile`` do badly on a CPU: the gathers from atoms to edges, the sums
from edges to atoms and the per-edge rotations.

Shapes: N atoms, E edges, K coefficients, C channels. ``source`` and ``centre``
(E,) long are the edge ends (:class:`~umadrive.model.escn.GraphInputs`: edges
sorted by centre).

* :func:`gather_pairs` ``(x (N, K, C), source, centre) -> (E, K, 2C)``: each
  edge's source features then its centre's, along the channels.
* :func:`sum_onto_centres` ``(messages (E, K, C), centre, N) -> (N, K, C)``: the
  sum of the messages of each centre's edges.
* :func:`sum_pairs_onto_atoms` ``(pairs (E, K, 2C), source, centre, N) -> (N, K, C)``:
  the first half of the channels summed onto the sources, the second onto the
  centres.
* :func:`rotate_edges` ``(rotations (E, A, B), features (E, B, C)) -> (E, A, C)``:
  each edge's features times its own matrix.

:func:`gather_pairs` and :func:`sum_pairs_onto_atoms` are each other's adjoint
and backward pass; the backward of :func:`sum_onto_centres` is a gather. Double
backward works (training on forces).

Why functions of their own, on a CPU: autograd's backward of a concatenation of
gathers hands each gather's backward a strided half of the gradient, which
``index_add`` then adds an element at a time (several times slower than from a
contiguous copy, on UMA-S's edge features); and inductor turns every sum onto
atoms into an atomic-add loop over all edge features. These functions copy each
half once and add whole rows. Under ``torch.compile`` the two sums are the
operators ``torch.ops.umadrive.*``, which inductor calls as they are, while the
gather's forward is left to inductor, which reads the atoms' rows straight
into the loop of the rotation that follows; outside it, plain autograd
functions of the same code (a custom operator's first call imports torch's
compiler, seconds that a first answer must not wait for).
"""

from __future__ import annotations

import torch

__all__ = ["gather_pairs", "rotate_edges", "sum_onto_centres", "sum_pairs_onto_atoms"]


def _gather_pairs(x: torch.Tensor, source: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    return torch.cat((x.index_select(0, source), x.index_select(0, centre)), dim=2)


def _sum_pairs_onto_atoms(pairs: torch.Tensor, source: torch.Tensor, centre: torch.Tensor,
                          num_atoms: int) -> torch.Tensor:
    channels = pairs.shape[2] // 2
    out = pairs.new_zeros((num_atoms, pairs.shape[1], channels))
    out.index_add_(0, source, pairs[..., :channels].contiguous())
    return out.index_add_(0, centre, pairs[..., channels:].contiguous())


def _sum_onto_centres(messages: torch.Tensor, centre: torch.Tensor,
                      num_atoms: int) -> torch.Tensor:
    out = messages.new_zeros((num_atoms, *messages.shape[1:]))
    return out.index_add_(0, centre, messages.contiguous())


def gather_pairs(x: torch.Tensor, source: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """(E, K, 2C): ``[x[source], x[centre]]`` along the channels, x (N, K, C)."""
    return _GatherPairs.apply(x, source, centre)


def sum_pairs_onto_atoms(pairs: torch.Tensor, source: torch.Tensor, centre: torch.Tensor,
                         num_atoms: int) -> torch.Tensor:
    """(N, K, C): the first half of the channels of ``pairs`` (E, K, 2C) summed onto
    their source atoms plus the second half onto their centres (the adjoint of
    :func:`gather_pairs`)."""
    if torch.compiler.is_compiling():
        return torch.ops.umadrive.sum_pairs_onto_atoms(pairs, source, centre, num_atoms)
    return _SumPairsOntoAtoms.apply(pairs, source, centre, num_atoms)


def sum_onto_centres(messages: torch.Tensor, centre: torch.Tensor, num_atoms: int) -> torch.Tensor:
    """(N, K, C): the sum of the messages (E, K, C) of each centre's edges."""
    if torch.compiler.is_compiling():
        return torch.ops.umadrive.sum_onto_centres(messages, centre, num_atoms)
    return _SumOntoCentres.apply(messages, centre, num_atoms)


def rotate_edges(rotations: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """(E, A, C): ``rotations[e] @ features[e]`` for every edge e, rotations
    (E, A, B), features (E, B, C).

    Eager, and compiled for other devices: one batched product. Compiled for a
    CPU: the same sum written as a broadcast product reduced over B, which
    inductor turns into one loop over the features that also takes in the
    gathers, copies and element-wise products around it; the batched product
    of so many small matrices runs far below the CPU's matrix-product rate (a
    matrix-library call per edge). Not in eager: there the broadcast would
    allocate (E, A, B, C).
    """
    if torch.compiler.is_compiling() and features.device.type == "cpu":
        return (rotations[:, :, :, None] * features[:, None, :, :]).sum(dim=2)
    return torch.bmm(rotations, features)


# Eager: autograd functions whose backward passes call the public functions, so
# that their graphs can be differentiated again.

class _GatherPairs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, source, centre):
        ctx.save_for_backward(source, centre)
        ctx.num_atoms = x.shape[0]
        return _gather_pairs(x, source, centre)

    @staticmethod
    def backward(ctx, grad):
        source, centre = ctx.saved_tensors
        return sum_pairs_onto_atoms(grad, source, centre, ctx.num_atoms), None, None


class _SumPairsOntoAtoms(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pairs, source, centre, num_atoms):
        ctx.save_for_backward(source, centre)
        return _sum_pairs_onto_atoms(pairs, source, centre, num_atoms)

    @staticmethod
    def backward(ctx, grad):
        source, centre = ctx.saved_tensors
        return gather_pairs(grad, source, centre), None, None, None


class _SumOntoCentres(torch.autograd.Function):
    @staticmethod
    def forward(ctx, messages, centre, num_atoms):
        ctx.save_for_backward(centre)
        return _sum_onto_centres(messages, centre, num_atoms)

    @staticmethod
    def backward(ctx, grad):
        (centre,) = ctx.saved_tensors
        return grad.index_select(0, centre), None, None


# Compiled: the sums as operators with fake (shape-only) implementations.

def _register_operators() -> None:
    library = "umadrive::"
    pair_sum = torch.library.custom_op(library + "sum_pairs_onto_atoms", _sum_pairs_onto_atoms,
                                       mutates_args=())
    centre_sum = torch.library.custom_op(library + "sum_onto_centres", _sum_onto_centres,
                                         mutates_args=())
    pair_sum.register_fake(lambda pairs, source, centre, num_atoms:
                           pairs.new_empty((num_atoms, pairs.shape[1], pairs.shape[2] // 2)))
    centre_sum.register_fake(lambda messages, centre, num_atoms:
                             messages.new_empty((num_atoms, *messages.shape[1:])))

    def save_ends(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[1], inputs[2])

    def save_centre(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[1])

    pair_sum.register_autograd(_SumPairsOntoAtoms.backward, setup_context=save_ends)
    centre_sum.register_autograd(_SumOntoCentres.backward, setup_context=save_centre)


_register_operators()
