"""The per-edge work of the message passing that torch's own operators and
``torch.compile`` do badly on a CPU: the gathers from atoms to edges, the sums
from edges to atoms and the per-edge rotations.

Shapes: N atoms, E edges, K coefficients, C channels. ``source`` and ``centre``
(E,) long are the edge ends (:class:`~umadrive.model.escn.GraphInputs`: edges
sorted by centre).

* :func:`gather_pairs` ``(x (N, K, C), source, centre) -> (E, K, 2C)``: each
  edge's source features then its centre's, along the channels.
* :func:`sum_onto_atoms` ``(values (E, K, C), atoms (E,), N) -> (N, K, C)``: the
  sum of the rows of each atom (the messages onto their centres; the backward
  pass of :func:`gather_pairs`, each half onto its edge ends).
* :func:`rotate_edges` ``(rotations (E, A, B), features (E, B, C)) -> (E, A, C)``:
  each edge's features times its own matrix.

The backward of a gather is a sum onto atoms and back; double backward works
(training on forces).

Why functions of their own, on a CPU: autograd's backward of a concatenation of
gathers hands each gather's backward a strided half of the gradient, which
``index_add`` then adds an element at a time (several times slower than from a
contiguous copy, on UMA-S's edge features); and inductor turns every sum onto
atoms into an atomic-add loop over all edge features. Here each half is copied
once and whole rows are added. Under ``torch.compile`` the sum is the operator
``torch.ops.umadrive.sum_onto_atoms``, which inductor calls as it is, while
the gather is left to inductor, which reads the atoms' rows straight
into the loop of the rotation that follows; outside it, plain autograd
functions of the same code (a custom operator's first call imports torch's
compiler, seconds that a first answer must not wait for).
"""

from __future__ import annotations

import torch

from umadrive.model import edge_products

__all__ = ["gather_pairs", "rotate_edges", "sum_onto_atoms"]


def _sum_onto_atoms(values: torch.Tensor, atoms: torch.Tensor, num_atoms: int) -> torch.Tensor:
    out = values.new_zeros((num_atoms, *values.shape[1:]))
    return out.index_add_(0, atoms, values.contiguous())


def gather_pairs(x: torch.Tensor, source: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """(E, K, 2C): ``[x[source], x[centre]]`` along the channels, x (N, K, C)."""
    return _GatherPairs.apply(x, source, centre)


def sum_onto_atoms(values: torch.Tensor, atoms: torch.Tensor, num_atoms: int) -> torch.Tensor:
    """(N, K, C): the sum of the rows of ``values`` (E, K, C) of each atom,
    ``atoms`` (E,) long; an atom without rows gets zeros."""
    if torch.compiler.is_compiling():
        return torch.ops.umadrive.sum_onto_atoms(values, atoms, num_atoms)
    return _SumOntoAtoms.apply(values, atoms, num_atoms)


def rotate_edges(rotations: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """(E, A, C): ``rotations[e] @ features[e]`` for every edge e, rotations
    (E, A, B), features (E, B, C).

    The batched product of so many small matrices runs far below a CPU's
    matrix-product rate (a matrix-library call per edge). So on a CPU: compiled,
    the sum is written as a broadcast product reduced over B, which inductor
    turns into one loop over the features that also takes in the gathers,
    copies and element-wise products around it; eager, the C loops of
    :mod:`umadrive.model.edge_products` (where they could be built; the
    broadcast would allocate (E, A, B, C) there), whose backward passes are
    again such products. Elsewhere, and without a C compiler: ``torch.bmm``.
    """
    if features.device.type == "cpu":
        if torch.compiler.is_compiling():
            return (rotations[:, :, :, None] * features[:, None, :, :]).sum(dim=2)
        if (rotations.device.type == "cpu" and rotations.dtype == features.dtype
                and features.dtype in (torch.float32, torch.float64)
                and edge_products.available()):
            return _RotateEdges.apply(rotations, features)
    return torch.bmm(rotations, features)


# Autograd functions whose backward passes call the public functions, so that
# their graphs can be differentiated again.

class _GatherPairs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, source, centre):
        ctx.save_for_backward(source, centre)
        ctx.num_atoms = x.shape[0]
        return torch.cat((x.index_select(0, source), x.index_select(0, centre)), dim=2)

    @staticmethod
    def backward(ctx, grad):
        source, centre = ctx.saved_tensors
        channels = grad.shape[2] // 2
        onto_sources = sum_onto_atoms(grad[..., :channels].contiguous(), source, ctx.num_atoms)
        onto_centres = sum_onto_atoms(grad[..., channels:].contiguous(), centre, ctx.num_atoms)
        return onto_sources + onto_centres, None, None


class _RotateEdges(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rotations, features):
        ctx.save_for_backward(rotations, features)
        return edge_products.apply(rotations, features)

    @staticmethod
    def backward(ctx, grad):
        rotations, features = ctx.saved_tensors
        grad_rotations = grad_features = None
        if ctx.needs_input_grad[0]:
            grad_rotations = _EdgeOuter.apply(grad, features)
        if ctx.needs_input_grad[1]:
            grad_features = rotate_edges(rotations.transpose(1, 2), grad)
        return grad_rotations, grad_features


class _EdgeOuter(torch.autograd.Function):
    """(E, A, B): ``g[e] @ x[e]^T``, g (E, A, C), x (E, B, C)."""

    @staticmethod
    def forward(ctx, g, x):
        ctx.save_for_backward(g, x)
        return edge_products.outer(g, x)

    @staticmethod
    def backward(ctx, grad):
        g, x = ctx.saved_tensors
        grad_g = rotate_edges(grad, x) if ctx.needs_input_grad[0] else None
        grad_x = rotate_edges(grad.transpose(1, 2), g) if ctx.needs_input_grad[1] else None
        return grad_g, grad_x


class _SumOntoAtoms(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, atoms, num_atoms):
        ctx.save_for_backward(atoms)
        return _sum_onto_atoms(values, atoms, num_atoms)

    @staticmethod
    def backward(ctx, grad):
        (atoms,) = ctx.saved_tensors
        return grad.index_select(0, atoms), None, None


# Compiled: the sum as an operator with a fake (shape-only) implementation.

def _register_operator() -> None:
    operator = torch.library.custom_op("umadrive::sum_onto_atoms", _sum_onto_atoms,
                                       mutates_args=())
    operator.register_fake(lambda values, atoms, num_atoms:
                           values.new_empty((num_atoms, *values.shape[1:])))

    def save_atoms(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[1])

    operator.register_autograd(_SumOntoAtoms.backward, setup_context=save_atoms)


_register_operator()
