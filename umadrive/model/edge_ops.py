"""The gathers from atoms to edges and the sums from edges to atoms of the message
passing, as operators that ``torch.compile`` calls rather than generates.

Shapes: N atoms, E edges, K coefficients, C channels. ``source`` and ``centre``
(E,) long are the edge ends (:class:`~umadrive.model.escn.GraphInputs`: edges
sorted by centre).

* :func:`gather_pairs` ``(x (N, K, C), source, centre) -> (E, K, 2C)``: each
  edge's source features then its centre's, along the channels.
* :func:`sum_onto_centres` ``(messages (E, K, C), centre, N) -> (N, K, C)``: the
  sum of the messages of each centre's edges.

:func:`gather_pairs` and :func:`sum_pairs_onto_atoms` are each other's adjoint
and backward pass; the backward of :func:`sum_onto_centres` is a gather. Double
backward works (training on forces).

Why operators of their own, on a CPU: autograd's backward of a concatenation of
gathers hands each gather's backward a strided half of the gradient, which
``index_add`` then adds an element at a time (25 ms, against 2 ms from a
contiguous copy, for UMA-S's 8,424 edges × 9 × 128 features); and inductor turns
every sum onto atoms into an atomic-add loop over all edge features. These
operators copy each half once and add whole rows; ``torch.compile`` calls them
as they are.
"""

from __future__ import annotations

import torch

__all__ = ["gather_pairs", "sum_onto_centres"]


@torch.library.custom_op("umadrive::gather_pairs", mutates_args=())
def gather_pairs(x: torch.Tensor, source: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """(E, K, 2C): ``[x[source], x[centre]]`` along the channels, x (N, K, C)."""
    return torch.cat((x.index_select(0, source), x.index_select(0, centre)), dim=2)


@gather_pairs.register_fake
def _(x: torch.Tensor, source: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    return x.new_empty((source.shape[0], x.shape[1], 2 * x.shape[2]))


@torch.library.custom_op("umadrive::sum_pairs_onto_atoms", mutates_args=())
def sum_pairs_onto_atoms(pairs: torch.Tensor, source: torch.Tensor, centre: torch.Tensor,
                         num_atoms: int) -> torch.Tensor:
    """(N, K, C): the first half of the channels of ``pairs`` (E, K, 2C) summed onto
    their source atoms plus the second half onto their centres (the adjoint of
    :func:`gather_pairs`)."""
    channels = pairs.shape[2] // 2
    out = pairs.new_zeros((num_atoms, pairs.shape[1], channels))
    out.index_add_(0, source, pairs[..., :channels].contiguous())
    return out.index_add_(0, centre, pairs[..., channels:].contiguous())


@sum_pairs_onto_atoms.register_fake
def _(pairs: torch.Tensor, source: torch.Tensor, centre: torch.Tensor,
      num_atoms: int) -> torch.Tensor:
    return pairs.new_empty((num_atoms, pairs.shape[1], pairs.shape[2] // 2))


@torch.library.custom_op("umadrive::sum_onto_centres", mutates_args=())
def sum_onto_centres(messages: torch.Tensor, centre: torch.Tensor,
                     num_atoms: int) -> torch.Tensor:
    """(N, K, C): the sum of the messages (E, K, C) of each centre's edges."""
    out = messages.new_zeros((num_atoms, *messages.shape[1:]))
    return out.index_add_(0, centre, messages.contiguous())


@sum_onto_centres.register_fake
def _(messages: torch.Tensor, centre: torch.Tensor, num_atoms: int) -> torch.Tensor:
    return messages.new_empty((num_atoms, *messages.shape[1:]))


def _save_ends(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[1], inputs[2])
    ctx.num_atoms = inputs[0].shape[0]


def _gather_pairs_backward(ctx, grad: torch.Tensor):
    source, centre = ctx.saved_tensors
    return sum_pairs_onto_atoms(grad, source, centre, ctx.num_atoms), None, None


def _save_pair_ends(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[1], inputs[2])


def _sum_pairs_backward(ctx, grad: torch.Tensor):
    source, centre = ctx.saved_tensors
    return gather_pairs(grad, source, centre), None, None, None


def _save_centre(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[1])


def _sum_onto_centres_backward(ctx, grad: torch.Tensor):
    (centre,) = ctx.saved_tensors
    return grad.index_select(0, centre), None, None


gather_pairs.register_autograd(_gather_pairs_backward, setup_context=_save_ends)
sum_pairs_onto_atoms.register_autograd(_sum_pairs_backward, setup_context=_save_pair_ends)
sum_onto_centres.register_autograd(_sum_onto_centres_backward, setup_context=_save_centre)
