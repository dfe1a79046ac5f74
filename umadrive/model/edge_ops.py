"""The gathers from atoms to edges and the sums from edges to atoms of the message
passing, as operators that ``torch.compile`` calls rather than generates.

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

:func:`gather_pairs` and :func:`sum_pairs_onto_atoms` are each other's adjoint
and backward pass; the backward of :func:`sum_onto_centres` is a gather. Double
backward works (training on forces).

Why operators of their own, on a CPU: autograd's backward of a concatenation of
gathers hands each gather's backward a strided half of the gradient, which
``index_add`` then adds an element at a time (several times slower than from a
contiguous copy, on UMA-S's edge features); and inductor turns
every sum onto atoms into an atomic-add loop over all edge features. These
functions copy each half once and add whole rows. Under ``torch.compile`` they
are the operators ``torch.ops.umadrive.*``, which inductor calls as they are;
outside it, plain autograd functions of the same code (a custom operator's first
call imports torch's compiler, seconds that a first answer must not wait for).
"""

from __future__ import annotations

import torch

__all__ = ["gather_pairs", "sum_onto_centres", "sum_pairs_onto_atoms"]


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
    if torch.compiler.is_compiling():
        return torch.ops.umadrive.gather_pairs(x, source, centre)
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


# Compiled: the same code as operators with fake (shape-only) implementations.

def _register_operators() -> None:
    library = "umadrive::"
    gather = torch.library.custom_op(library + "gather_pairs", _gather_pairs, mutates_args=())
    pair_sum = torch.library.custom_op(library + "sum_pairs_onto_atoms", _sum_pairs_onto_atoms,
                                       mutates_args=())
    centre_sum = torch.library.custom_op(library + "sum_onto_centres", _sum_onto_centres,
                                         mutates_args=())
    gather.register_fake(lambda x, source, centre:
                         x.new_empty((source.shape[0], x.shape[1], 2 * x.shape[2])))
    pair_sum.register_fake(lambda pairs, source, centre, num_atoms:
                           pairs.new_empty((num_atoms, pairs.shape[1], pairs.shape[2] // 2)))
    centre_sum.register_fake(lambda messages, centre, num_atoms:
                             messages.new_empty((num_atoms, *messages.shape[1:])))

    def save_ends(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[1], inputs[2])

    def save_ends_and_atoms(ctx, inputs, output) -> None:
        save_ends(ctx, inputs, output)
        ctx.num_atoms = inputs[0].shape[0]

    def save_centre(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[1])

    gather.register_autograd(_GatherPairs.backward, setup_context=save_ends_and_atoms)
    pair_sum.register_autograd(_SumPairsOntoAtoms.backward, setup_context=save_ends)
    centre_sum.register_autograd(_SumOntoCentres.backward, setup_context=save_centre)


_register_operators()
