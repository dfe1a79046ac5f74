"""The message-passing gathers, sums and rotations (umadrive.model.edge_ops)
against their definitions, with first and second derivatives checked by finite
differences (torch.autograd.gradcheck / gradgradcheck), torch's operator checks,
and the compiled forms against the eager ones."""

import pytest
import torch

from umadrive.model.edge_ops import gather_pairs, rotate_edges, sum_onto_atoms


def graph(num_atoms: int = 5, num_edges: int = 17, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centre = torch.sort(torch.randint(0, num_atoms, (num_edges,), generator=generator)).values
    source = torch.randint(0, num_atoms, (num_edges,), generator=generator)
    return source, centre, generator


def test_gather_pairs_is_the_two_gathers_side_by_side():
    source, centre, generator = graph()
    x = torch.randn(5, 4, 3, generator=generator)
    pairs = gather_pairs(x, source, centre)
    torch.testing.assert_close(pairs[..., :3], x[source], rtol=0, atol=0)
    torch.testing.assert_close(pairs[..., 3:], x[centre], rtol=0, atol=0)


def test_sums_are_sums_over_edges():
    source, centre, generator = graph()
    messages = torch.randn(17, 4, 3, generator=generator, dtype=torch.float64)
    expected = torch.stack([messages[centre == atom].sum(0) for atom in range(5)])
    torch.testing.assert_close(sum_onto_atoms(messages, centre, 5), expected)
    expected = torch.stack([messages[source == atom].sum(0) for atom in range(5)])
    torch.testing.assert_close(sum_onto_atoms(messages, source, 5), expected)


def test_an_atom_without_edges_gets_zero():
    source, centre = torch.tensor([0, 1]), torch.tensor([0, 0])
    out = sum_onto_atoms(torch.ones(2, 1, 1), centre, 3)
    assert out.flatten().tolist() == [2.0, 0.0, 0.0]
    assert gather_pairs(torch.ones(3, 1, 1), source, centre).shape == (2, 1, 2)


def test_the_gradient_of_a_gather_sums_each_half_onto_its_edge_ends():
    source, centre, generator = graph()
    x = torch.randn(5, 4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(17, 4, 6, generator=generator, dtype=torch.float64)
    (gradient,) = torch.autograd.grad((gather_pairs(x, source, centre) * weights).sum(), x)
    expected = torch.stack([weights[source == atom, :, :3].sum(0)
                            + weights[centre == atom, :, 3:].sum(0) for atom in range(5)])
    torch.testing.assert_close(gradient, expected)


@pytest.mark.parametrize("op", ["gather_pairs", "sum_onto_atoms"])
def test_first_and_second_derivatives(op):
    source, centre, generator = graph(num_atoms=4, num_edges=9)
    if op == "gather_pairs":
        args = (torch.randn(4, 2, 3, generator=generator, dtype=torch.float64), source, centre)
        function = gather_pairs
    else:
        args = (torch.randn(9, 2, 3, generator=generator, dtype=torch.float64), source, 4)
        function = sum_onto_atoms
    first = args[0].requires_grad_()
    wrapped = lambda tensor: function(tensor, *args[1:])  # noqa: E731
    assert torch.autograd.gradcheck(wrapped, (first,))
    assert torch.autograd.gradgradcheck(wrapped, (first,))


def test_operator_registration():
    """Schema, fake (meta) shapes and autograd registration as torch.compile needs them."""
    _, centre, generator = graph()
    args = (torch.randn(17, 4, 3, generator=generator, requires_grad=True), centre, 5)
    torch.library.opcheck(torch.ops.umadrive.sum_onto_atoms.default, args)


def test_compiled_calls_the_operator_and_agrees():
    """Under torch.compile the sums are the registered operator and the gather is
    traced (one graph, no break), with the same values and gradients as the eager
    autograd functions."""
    source, centre, generator = graph()
    x = torch.randn(5, 4, 3, generator=generator, dtype=torch.float64)

    def energy(x):
        pairs = gather_pairs(x, source, centre)
        return sum_onto_atoms(pairs[..., :3] * pairs[..., 3:], centre, 5).pow(2).sum()

    graphs = []

    def backend(graph_module, example_inputs):
        graphs.append({str(node.target) for node in graph_module.graph.nodes})
        return graph_module.forward

    compiled = torch.compile(energy, backend=backend, fullgraph=True)
    eager_x, compiled_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected, value = energy(eager_x), compiled(compiled_x)
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(torch.autograd.grad(value, compiled_x)[0],
                               torch.autograd.grad(expected, eager_x)[0])
    targets = " ".join(set().union(*graphs))
    assert "umadrive.sum_onto_atoms" in targets
    assert "umadrive.gather" not in targets


def test_rotate_edges_is_each_edge_times_its_matrix():
    generator = torch.Generator().manual_seed(1)
    rotations = torch.randn(7, 3, 4, generator=generator, dtype=torch.float64)
    features = torch.randn(7, 4, 5, generator=generator, dtype=torch.float64)
    expected = torch.stack([rotations[e] @ features[e] for e in range(7)])
    torch.testing.assert_close(rotate_edges(rotations, features), expected)


def test_compiled_rotation_agrees_in_values_and_both_gradients():
    """The compiled form (a broadcast product reduced by inductor, see rotate_edges)
    against the eager batched product, with inductor generating the code."""
    generator = torch.Generator().manual_seed(2)
    rotations = torch.randn(11, 9, 9, generator=generator, dtype=torch.float64)
    features = torch.randn(11, 9, 6, generator=generator, dtype=torch.float64)
    weights = torch.randn(11, 9, 6, generator=generator, dtype=torch.float64)

    def loss(rotations, features):
        return (rotate_edges(rotations, features).sin() * weights).sum()

    compiled = torch.compile(loss, fullgraph=True, dynamic=False)
    eager_args = [rotations.clone().requires_grad_(), features.clone().requires_grad_()]
    compiled_args = [rotations.clone().requires_grad_(), features.clone().requires_grad_()]
    expected, value = loss(*eager_args), compiled(*compiled_args)
    torch.testing.assert_close(value, expected)
    for ours, reference in zip(torch.autograd.grad(value, compiled_args),
                               torch.autograd.grad(expected, eager_args)):
        torch.testing.assert_close(ours, reference)
