"""The spherical-harmonic conventions of umadrive.model.so3, checked from first
principles (generators, matrix exponentials) and against UMA's Jd buffers."""

from __future__ import annotations

import math

import pytest
import torch

from umadrive.model.checkpoint import load_checkpoint
from umadrive.model.so3 import (
    CoefficientLayout,
    EdgeRotation,
    so3_generators,
    wigner_d_about_x,
    wigner_j,
)

LMAX = 4


def _block(wigner: torch.Tensor, rotation: EdgeRotation, l: int) -> torch.Tensor:
    """The l-major (2l+1)x(2l+1) block of m-major Wigner rows."""
    full = wigner[:, torch.argsort(rotation.node_index)]
    return full[:, l * l:(l + 1) ** 2, l * l:(l + 1) ** 2]


POLES = [[0, 1.0, 0], [0, -2.0, 0], [1e-9, 3.0, -1e-9], [0, 0, 1.0]]
# y**2 = |v|**2 / 2: where EdgeRotation switches between its two frames
CHART_BOUNDARY = [[1.0, 1.0, 0], [0, 0.5 ** 0.5, 0.5 ** 0.5]]


def _edge_vectors(count: int, seed: int, extra: list = POLES + CHART_BOUNDARY) -> torch.Tensor:
    """Random edges plus ones exactly along the poles (where Euler angles are singular)."""
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(count, 3, generator=generator, dtype=torch.float64)
    return torch.cat((vectors, torch.tensor(extra, dtype=torch.float64)))


def test_l1_generators_are_rotations_about_x_y_z():
    g = so3_generators(1)
    expected = torch.zeros(3, 3, 3, dtype=torch.float64)
    for axis in range(3):
        b, c = (axis + 1) % 3, (axis + 2) % 3
        expected[axis, c, b], expected[axis, b, c] = 1.0, -1.0
    assert torch.allclose(g, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("l", range(LMAX + 1))
def test_generators_satisfy_the_so3_algebra(l):
    gx, gy, gz = so3_generators(l)
    assert torch.allclose(gx @ gy - gy @ gx, gz, atol=1e-12)
    assert torch.allclose(gy @ gz - gz @ gy, gx, atol=1e-12)


@pytest.mark.parametrize("l", range(LMAX + 1))
def test_j_conjugates_y_rotations_into_x_rotations(l):
    j = wigner_j(l)
    t = 0.83
    y_rotation = torch.linalg.matrix_exp(t * so3_generators(l)[1])
    assert torch.allclose(j @ y_rotation @ j, wigner_d_about_x(l, t), atol=1e-13)
    assert torch.allclose(j @ j, torch.eye(2 * l + 1, dtype=torch.float64), atol=1e-13)


def test_j_matches_the_jd_buffers_of_a_uma_checkpoint(uma_checkpoint_path):
    state = load_checkpoint(uma_checkpoint_path("m1p1")).state_dict
    for l in range(LMAX + 1):
        assert torch.allclose(state[f"backbone.Jd_{l}"].double(), wigner_j(l), atol=1e-6)


def test_layout_is_m_major():
    assert CoefficientLayout(2, 2).node_index == [0, 2, 6, 3, 7, 1, 5, 8, 4]
    layout = CoefficientLayout(4, 2)
    assert layout.m_sizes == [5, 4, 3]
    assert layout.m_groups == [5, 8, 6]
    assert [m for _, m in layout.lm] == [0] * 5 + [1] * 4 + [-1] * 4 + [2] * 3 + [-2] * 3


def test_edge_rotation_takes_the_edge_onto_plus_y_and_is_orthogonal():
    rotation = EdgeRotation(CoefficientLayout(LMAX, LMAX), torch.float64)
    vectors = _edge_vectors(200, seed=1)
    wigner = rotation(vectors)
    unit = vectors / vectors.norm(dim=1, keepdim=True)
    d1 = _block(wigner, rotation, 1)
    assert torch.allclose(d1 @ unit[:, :, None],
                          torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)[:, None], atol=1e-13)
    identity = torch.eye(wigner.shape[1], dtype=torch.float64)
    assert torch.allclose(wigner @ wigner.transpose(1, 2), identity, atol=1e-13)


def test_higher_degrees_represent_the_same_rotation():
    """D_l = matrix_exp(theta n . G_l) for the rotation theta n of the l = 1 block."""
    rotation = EdgeRotation(CoefficientLayout(LMAX, LMAX), torch.float64)
    wigner = rotation(_edge_vectors(60, seed=2))
    d1 = _block(wigner, rotation, 1)
    g1 = so3_generators(1)
    checked = 0
    for e in range(wigner.shape[0]):
        angle = math.acos(max(-1.0, min(1.0, (float(d1[e].trace()) - 1) / 2)))
        if not 1e-3 < angle < 3.0:  # the log is ill-conditioned near 0 and pi
            continue
        log = (d1[e] - d1[e].T) / (2 * math.sin(angle)) * angle
        coefficients = [float((log * g1[k]).sum() / 2) for k in range(3)]
        for l in range(LMAX + 1):
            generator = sum(c * so3_generators(l)[k] for k, c in enumerate(coefficients))
            assert torch.allclose(torch.linalg.matrix_exp(generator),
                                  _block(wigner, rotation, l)[e], atol=1e-12)
        checked += 1
    assert checked > 30


def test_edge_rotation_is_smooth_within_each_frame():
    """Analytic derivatives equal finite differences, also on the poles (+-y). (The
    frame jumps by a roll about +y at the chart boundary; the model is invariant to it.)"""
    rotation = EdgeRotation(CoefficientLayout(2, 2), torch.float64)
    vectors = _edge_vectors(5, seed=3, extra=POLES).requires_grad_(True)
    assert torch.autograd.gradcheck(rotation, (vectors,), fast_mode=True)
