"""Real spherical-harmonic conventions and the per-edge rotations of eSCN.

Conventions (the ones UMA checkpoints were trained in; e3nn's, which fairchem uses):

* Coefficients of degree ``l`` are stored ``l``-major, ``m = -l..l`` within each
  ``l``: index ``l*l + l + m`` in a vector of ``(lmax + 1)**2``.
* The real basis for ``l = 1`` is ``(x, y, z)`` (index ``m = -1, 0, +1``): the
  Wigner-D matrix of a rotation ``R`` (a 3x3 matrix acting on column vectors
  ``(x, y, z)``) is ``R`` itself. ``m = 0`` is the coefficient along **y**, the
  polar axis of this basis.
* ``so3_generators(l)[k]`` is the generator of rotations about axis ``k``
  (x, y, z): ``D_l(exp(t L_k)) = matrix_exp(t * so3_generators(l)[k])``.
* ``wigner_j(l)`` is the constant ``J_l`` of e3nn's Euler-angle formula (the
  ``Jd_l`` buffers of a UMA checkpoint): ``J_l X_l(t) J_l = D_l(R_x(t))`` where
  ``X_l(t) = D_l(R_y(t))`` has ``cos(k t)`` on the diagonal and ``sin(k t)`` on
  the anti-diagonal, ``k = l, l-1, ..., -l`` by row. Computed here in float64
  to 1e-15 (``J_l = (-1)^l D_l(rotation by pi about (x + y)/sqrt 2)``); a
  checkpoint's ``Jd_l`` buffers are checked against it.
* eSCN works in a frame per edge: :class:`EdgeRotation` gives the Wigner-D of
  a rotation taking the edge direction onto **+y**, with the coefficients
  re-ordered **m-major** and truncated to ``|m| <= mmax`` (:class:`CoefficientLayout`).
  The roll about +y after that rotation is arbitrary: the network is exactly
  invariant to it (SO(2)-equivariant convolutions, gates from m = 0), so we use
  roll 0 (fairchem draws a random one; the outputs agree to rounding).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import nn


@lru_cache(maxsize=None)
def so3_generators(l: int) -> torch.Tensor:
    """(3, 2l+1, 2l+1) float64: real-basis generators of rotations about x, y, z."""
    m = np.arange(-l, l + 1)
    raising = np.diag(-np.sqrt(l * (l + 1) - m[:-1] * (m[:-1] + 1.0)), -1)
    lowering = np.diag(np.sqrt(l * (l + 1) - m[1:] * (m[1:] - 1.0)), 1)
    complex_generators = np.stack(
        [0.5 * (raising + lowering), np.diag(1j * m), -0.5j * (raising - lowering)]
    )
    # Change of basis from real to complex spherical harmonics (e3nn's phases).
    q = np.zeros((2 * l + 1, 2 * l + 1), dtype=complex)
    for mm in range(-l, 0):
        q[l + mm, l - mm] = 1 / math.sqrt(2)
        q[l + mm, l + mm] = -1j / math.sqrt(2)
    q[l, l] = 1.0
    for mm in range(1, l + 1):
        q[l + mm, l + mm] = (-1) ** mm / math.sqrt(2)
        q[l + mm, l - mm] = 1j * (-1) ** mm / math.sqrt(2)
    q = (-1j) ** l * q
    real = q.conj().T @ complex_generators @ q
    return torch.from_numpy(np.ascontiguousarray(real.real))


@lru_cache(maxsize=None)
def wigner_j(l: int) -> torch.Tensor:
    """(2l+1, 2l+1) float64: the constant ``J_l`` of the Euler-angle Wigner formula."""
    gx, gy, _ = so3_generators(l)
    rotation = torch.linalg.matrix_exp(math.pi * (gx + gy) / math.sqrt(2))
    return rotation * (-1) ** l


def wigner_d_about_x(l: int, angle: float) -> torch.Tensor:
    """(2l+1, 2l+1) float64: ``D_l`` of the rotation by ``angle`` about x."""
    return torch.linalg.matrix_exp(angle * so3_generators(l)[0])


class CoefficientLayout:
    """Which ``(l, m)`` coefficients an edge carries and in what order.

    Node features hold all ``(lmax+1)**2`` coefficients ``l``-major. Edge features
    hold those with ``|m| <= mmax``, **m-major**: ``m = 0`` for ``l = 0..lmax``, then
    ``+1`` for ``l = 1..lmax``, ``-1`` for ``l = 1..lmax``, ``+2`` ..., e.g. for
    lmax = mmax = 2 the node indices ``[0, 2, 6, 3, 7, 1, 5, 8, 4]``.
    """

    def __init__(self, lmax: int, mmax: int) -> None:
        if not 0 <= mmax <= lmax:
            raise ValueError(f"need 0 <= mmax <= lmax, got lmax={lmax}, mmax={mmax}")
        self.lmax = lmax
        self.mmax = mmax
        order: list[tuple[int, int]] = [(l, 0) for l in range(lmax + 1)]
        for m in range(1, mmax + 1):
            order += [(l, m) for l in range(m, lmax + 1)]
            order += [(l, -m) for l in range(m, lmax + 1)]
        self.lm = order
        #: node index (l-major) of each edge coefficient, in edge (m-major) order
        self.node_index = [l * l + l + m for l, m in order]
        #: number of degrees l carrying order m, for m = 0..mmax
        self.m_sizes = [lmax + 1 - m for m in range(mmax + 1)]
        #: sizes of the m = 0, (+-1), (+-2), ... groups along the coefficient axis
        self.m_groups = [self.m_sizes[0]] + [2 * s for s in self.m_sizes[1:]]
        self.num_node_coefficients = (lmax + 1) ** 2
        self.num_edge_coefficients = len(order)

    def degree_of_edge_coefficients(self) -> list[int]:
        return [l for l, _ in self.lm]


def _cos_sin_multiples(cos: torch.Tensor, sin: torch.Tensor, lmax: int):
    """cos(k t), sin(k t) for k = 0..lmax from cos t, sin t (no trigonometric calls)."""
    cosines, sines = [torch.ones_like(cos)], [torch.zeros_like(sin)]
    for _ in range(lmax):
        c, s = cosines[-1], sines[-1]
        cosines.append(c * cos - s * sin)
        sines.append(s * cos + c * sin)
    return cosines, sines


class EdgeRotation(nn.Module):
    """Per-edge Wigner-D matrices of the rotation taking the edge onto +y.

    ``forward(edge_vectors (E, 3))`` returns ``wigner (E, n_edge, (lmax+1)**2)``,
    rows in the m-major edge order of :class:`CoefficientLayout`; the inverse
    rotation is its transpose. Built from Euler angles (``D_l = J X(-beta) J
    X(-alpha)``, alpha = atan2(x, z), beta = acos(y)), evaluated from cos/sin of the
    angles directly. Those angles are singular when the edge is along +-y, so
    edges with ``y**2 > 1/2`` are first turned by a fixed 90 degree rotation about
    x (whose Wigner-D is applied on the right): every edge gets a smooth frame
    and exact forces, whatever its direction.
    """

    def __init__(self, layout: CoefficientLayout, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.layout = layout
        quarter_turn = math.pi / 2
        for l in range(1, layout.lmax + 1):
            j = wigner_j(l)
            flipped = j.flip(0)
            # J X(t) J = sum_i cos(f_i t) J[:, i] J[i, :] + sin(f_i t) J[:, i] J[2l - i, :]
            self.register_buffer(f"cos_basis_{l}", torch.einsum("ai,ib->iab", j, j)
                                 .reshape(2 * l + 1, -1).to(dtype), persistent=False)
            self.register_buffer(f"sin_basis_{l}", torch.einsum("ai,ib->iab", j, flipped)
                                 .reshape(2 * l + 1, -1).to(dtype), persistent=False)
            self.register_buffer(f"quarter_turn_{l}", wigner_d_about_x(l, quarter_turn).to(dtype),
                                 persistent=False)
        self.register_buffer("node_index", torch.tensor(layout.node_index), persistent=False)

    def forward(self, edge_vectors: torch.Tensor) -> torch.Tensor:
        lmax = self.layout.lmax
        unit = edge_vectors / torch.linalg.vector_norm(edge_vectors, dim=1, keepdim=True)
        near_pole = unit[:, 1] ** 2 > 0.5
        # R_x(pi/2) (x, y, z) = (x, -z, y): takes a near-pole edge to the equator.
        turned = torch.stack((unit[:, 0], -unit[:, 2], unit[:, 1]), dim=1)
        u = torch.where(near_pole[:, None], turned, unit)
        x, y, z = u.unbind(1)
        rho = torch.sqrt(x * x + z * z)  # >= 1/sqrt(2) in both charts
        cos_a, sin_a = _cos_sin_multiples(z / rho, x / rho, lmax)
        cos_b, sin_b = _cos_sin_multiples(y, rho, lmax)

        size = self.layout.num_node_coefficients
        full = edge_vectors.new_zeros((edge_vectors.shape[0], size, size))
        full[:, 0, 0] = 1.0
        for l in range(1, lmax + 1):
            freq = range(l, -l - 1, -1)  # frequency of row i of X_l
            # X(-t): cos(f t) on the diagonal, -sin(f t) on the anti-diagonal.
            cb = torch.stack([cos_b[abs(f)] for f in freq], dim=1)
            sb = torch.stack([-math.copysign(1, f) * sin_b[abs(f)] if f else sin_b[0]
                              for f in freq], dim=1)
            jxj = (cb @ getattr(self, f"cos_basis_{l}") + sb @ getattr(self, f"sin_basis_{l}"))
            jxj = jxj.view(edge_vectors.shape[0], 2 * l + 1, 2 * l + 1)
            ca = torch.stack([cos_a[abs(f)] for f in freq], dim=1)
            sa = torch.stack([-math.copysign(1, f) * sin_a[abs(f)] if f else sin_a[0]
                              for f in freq], dim=1)
            # (B X)[:, j] = B[:, j] cos_j + B[:, 2l - j] sin_{2l - j}
            block = jxj * ca[:, None, :] + jxj.flip(2) * sa.flip(1)[:, None, :]
            block = torch.where(near_pole[:, None, None],
                                block @ getattr(self, f"quarter_turn_{l}"), block)
            full[:, l * l:(l + 1) ** 2, l * l:(l + 1) ** 2] = block
        return full.index_select(1, self.node_index)
