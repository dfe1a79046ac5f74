"""The mixture-of-linear-experts layer: mixing, merging and per-system routing."""

from __future__ import annotations

import torch

from umadrive.model.mole import ExpertRouting, MixtureOfLinearExperts


def _layer() -> MixtureOfLinearExperts:
    torch.manual_seed(0)
    return MixtureOfLinearExperts(4, 6, 5, bias=True).double()


def test_output_is_the_linear_map_of_the_mixed_weight():
    layer = _layer()
    alpha = torch.tensor([0.1, 0.5, 0.3, 0.1], dtype=torch.float64)
    x = torch.randn(7, 2, 6, dtype=torch.float64)
    expected = sum(a * (x @ w.T) for a, w in zip(alpha, layer.weights)) + layer.bias
    got = layer(x, ExpertRouting(alpha[None], (7,)))
    assert torch.allclose(got, expected, atol=1e-13)
    merged = torch.nn.functional.linear(x, layer.merged_weight(alpha), layer.bias)
    assert torch.allclose(merged, expected, atol=1e-13)


def test_each_system_gets_its_own_mixture():
    layer = _layer()
    alpha = torch.softmax(torch.randn(3, 4, dtype=torch.float64), dim=1)
    counts = (2, 0, 5)
    x = torch.randn(sum(counts), 6, dtype=torch.float64)
    got = layer(x, ExpertRouting(alpha, counts))
    parts = x.split(list(counts))
    for b, part in enumerate(parts):
        alone = layer(part, ExpertRouting(alpha[b:b + 1], (counts[b],)))
        start = sum(counts[:b])
        assert torch.allclose(got[start:start + counts[b]], alone, atol=1e-13)


def test_consecutive_systems_of_equal_mixtures_share_one_block_of_rows():
    layer = _layer()
    a, b = torch.softmax(torch.randn(2, 4, dtype=torch.float64), dim=1)
    alpha = torch.stack((a, a, b, b, b, a))
    counts = (2, 3, 1, 4, 2, 3)
    routing = ExpertRouting.grouped(alpha, counts)
    assert routing.counts == (5, 7, 3)
    assert torch.equal(routing.coefficients, torch.stack((a, b, a)))
    x = torch.randn(sum(counts), 6, dtype=torch.float64)
    assert torch.allclose(layer(x, routing), layer(x, ExpertRouting(alpha, counts)), atol=1e-13)
    # a chunk of the rows keeps the mixture of each of its rows
    part = routing.rows(4, 13)
    assert part.counts == (1, 7, 1)
    assert torch.allclose(layer(x[4:13], part), layer(x, routing)[4:13], atol=1e-13)


def test_systems_of_different_mixtures_keep_their_own():
    alpha = torch.softmax(torch.randn(3, 4, dtype=torch.float64), dim=1)
    routing = ExpertRouting.grouped(alpha, (2, 2, 2))
    assert routing.counts == (2, 2, 2) and torch.equal(routing.coefficients, alpha)


def test_a_routed_mixture_is_reused_until_coefficients_or_weights_change():
    layer = _layer().requires_grad_(False)
    alpha = torch.softmax(torch.randn(2, 4, dtype=torch.float64), dim=1)
    first = layer.mixed_weights(alpha)
    assert layer.mixed_weights(alpha.clone()) is first  # an MD step's same coefficients
    other = alpha.flip(0)
    assert torch.allclose(layer.mixed_weights(other), torch.einsum("be,eoi->boi", other,
                                                                   layer.weights))
    with torch.no_grad():
        layer.weights.mul_(2)  # e.g. training between predictions: the mixture follows
    again = layer.mixed_weights(alpha)
    assert torch.allclose(again, 2 * first, atol=1e-13)
    trainable = _layer()  # weights needing gradients: mixed every time, never kept
    assert trainable.mixed_weights(alpha) is not trainable.mixed_weights(alpha)


def test_a_merged_weight_is_its_own_tensor_not_the_kept_mixture():
    """Changing the merged weight in place (as a test of the merged check does)
    must not change what routed calls use."""
    layer = _layer().requires_grad_(False)
    alpha = torch.softmax(torch.randn(1, 4, dtype=torch.float64), dim=1)
    routed = layer.mixed_weights(alpha).clone()
    layer.merge(alpha[0])
    with torch.no_grad():
        layer.merged.mul_(2)
    assert torch.equal(layer.mixed_weights(alpha), routed)
