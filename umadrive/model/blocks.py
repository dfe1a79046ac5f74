"""The layers of an eSCN-MD block: radial MLPs, the spherical-harmonic RMS norm,
SO(3) and SO(2) linear maps, the gate activation, the edge-wise message and the
atom-wise feed-forward.

Shapes: N atoms, E edges, C sphere channels, H hidden channels, node features
``(N, (lmax+1)**2, C)`` l-major, edge features ``(E, n_edge, channels)`` m-major
(:class:`~umadrive.model.so3.CoefficientLayout`). Attribute names follow the
parameter names of UMA checkpoints, so their state dicts load as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from umadrive.model.edge_ops import gather_pairs, rotate_edges, sum_onto_atoms
from umadrive.model.mole import ExpertRouting, MixtureOfLinearExperts, linear_per_system
from umadrive.model.so3 import CoefficientLayout


class RadialMLP(nn.Module):
    """Linear -> LayerNorm -> SiLU, repeated, then a final Linear. ``widths``: [in, ..., out]."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for index, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(width_in, width_out))
            if index < len(widths) - 2:
                layers += [nn.LayerNorm(width_out), nn.SiLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def degree_index(lmax: int) -> torch.Tensor:
    """(lmax+1)**2 long: the degree l of each l-major node coefficient."""
    return torch.tensor([l for l in range(lmax + 1) for _ in range(2 * l + 1)])


class EquivariantRMSNorm(nn.Module):
    """RMS norm over all coefficients and channels of a node (fairchem's ``rms_norm_sh``).

    The l = 0 coefficient is centred over channels first; each degree weighs
    ``1 / ((2l+1)(lmax+1))`` in the mean square; a scale per (l, channel) and a
    bias on l = 0 follow. ``eps = 1e-5``.
    """

    def __init__(self, lmax: int, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.lmax = lmax
        self.eps = eps
        self.affine_weight = nn.Parameter(torch.ones(lmax + 1, channels))
        self.affine_bias = nn.Parameter(torch.zeros(channels))
        degrees = degree_index(lmax)
        self.register_buffer("degrees", degrees, persistent=False)
        self.register_buffer("degree_weight",
                             1.0 / ((2 * degrees + 1) * (lmax + 1)).to(torch.float64),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scalars = x[:, :1] - x[:, :1].mean(dim=2, keepdim=True)
        x = torch.cat((scalars, x[:, 1:]), dim=1)
        mean_square = torch.einsum("nic,i->n", x.pow(2), self.degree_weight.to(x.dtype))
        mean_square = mean_square / x.shape[2]
        scale = (mean_square + self.eps).rsqrt()[:, None, None] * self.affine_weight[self.degrees]
        out = x * scale
        return torch.cat((out[:, :1] + self.affine_bias, out[:, 1:]), dim=1)


class SO3Linear(nn.Module):
    """A linear map per degree l (weight (lmax+1, out, in)), bias on l = 0."""

    def __init__(self, in_features: int, out_features: int, lmax: int) -> None:
        super().__init__()
        bound = in_features ** -0.5
        self.weight = nn.Parameter(torch.empty(lmax + 1, out_features, in_features)
                                   .uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.register_buffer("degrees", degree_index(lmax), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.einsum("nic,ioc->nio", x, self.weight[self.degrees])
        return torch.cat((out[:, :1] + self.bias, out[:, 1:]), dim=1)


class SO2mConv(nn.Module):
    """The SO(2) convolution of one order m > 0 as a complex multiplication.

    Input (E, 2*k*C_in): the +m then the -m coefficients of the k = lmax-m+1
    degrees. ``fc`` holds the weight rows [W1; W2] and gives
    ``(+m) = W1 x+ - W2 x-``, ``(-m) = W2 x+ + W1 x-``, computed as one product
    with ``[[W1, -W2], [W2, W1]]``; output (E, 2k, C_out), +m degrees first.
    """

    def __init__(self, num_experts: int, degrees: int, in_channels: int,
                 out_channels: int) -> None:
        super().__init__()
        self.degrees = degrees
        self.out_channels = out_channels
        self.fc = MixtureOfLinearExperts(num_experts, degrees * in_channels,
                                         2 * degrees * out_channels, bias=False)

    def forward(self, x: torch.Tensor, routing: ExpertRouting | None) -> torch.Tensor:
        w1, w2 = self.fc.weights_for(routing).chunk(2, dim=1)
        block = torch.cat((torch.cat((w1, -w2), dim=2), torch.cat((w2, w1), dim=2)), dim=1)
        out = linear_per_system(x, block, None, None if routing is None else routing.counts)
        return out.view(x.shape[0], 2 * self.degrees, self.out_channels)


class SO2Convolution(nn.Module):
    """Linear maps between edge features that commute with rotations about the edge.

    m = 0: ``fc_m0`` on all degrees at once (with bias); m > 0: :class:`SO2mConv`.
    With ``radial_widths`` the inputs are first multiplied per (m, l, channel) by
    a radial MLP of the edge scalars. ``gate_channels`` extra m = 0 outputs are
    returned separately (the gates of the activation that follows).
    """

    def __init__(self, layout: CoefficientLayout, in_channels: int, out_channels: int,
                 num_experts: int, *, radial_widths: list[int] | None = None,
                 gate_channels: int = 0) -> None:
        super().__init__()
        self.layout = layout
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.gate_channels = gate_channels
        m0_in = layout.m_sizes[0] * in_channels
        self.fc_m0 = MixtureOfLinearExperts(
            num_experts, m0_in, layout.m_sizes[0] * out_channels + gate_channels, bias=True)
        self.so2_m_conv = nn.ModuleList(
            SO2mConv(num_experts, size, in_channels, out_channels)
            for size in layout.m_sizes[1:])
        self.radial_split = [size * in_channels for size in layout.m_sizes]
        if radial_widths is not None:
            self.rad_func = RadialMLP([*radial_widths, sum(self.radial_split)])
        else:
            self.rad_func = None

    def forward(self, groups: Sequence[torch.Tensor], routing: ExpertRouting | None,
                edge_scalars: torch.Tensor | None = None
                ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """groups: the m = 0, (+-1), (+-2), ... groups of the edge features,
        (E, m_groups[m], C_in) each -> (the same groups with C_out channels, gates
        (E, gate_channels) or None).

        Groups in and out rather than one (E, n_edge, C) tensor: the gate between
        the two convolutions of :class:`Edgewise` works per group, and the
        concatenations and splits in between would each copy every edge feature
        in the forward and the backward pass."""
        num_edges = groups[0].shape[0]
        radial = None
        if self.rad_func is not None:
            radial = self.rad_func(edge_scalars).split(self.radial_split, dim=1)

        m0 = groups[0].reshape(num_edges, self.radial_split[0])
        if radial is not None:
            m0 = m0 * radial[0]
        m0 = self.fc_m0(m0, routing)
        gates = None
        if self.gate_channels:
            gates, m0 = m0.split((self.gate_channels, m0.shape[1] - self.gate_channels), dim=1)
        out = [m0.view(num_edges, self.layout.m_sizes[0], self.out_channels)]
        for m, conv in enumerate(self.so2_m_conv, start=1):
            xm = groups[m].reshape(num_edges, 2, self.radial_split[m])
            if radial is not None:
                xm = xm * radial[m][:, None, :]
            out.append(conv(xm.reshape(num_edges, 2 * self.radial_split[m]), routing))
        return out, gates


class Edgewise(nn.Module):
    """The message of every edge, rotated back and summed onto its centre atom.

    ``x_j || x_i`` (source first) in the edge frame -> SO2Conv1 (radial-weighted,
    2C -> H, plus lmax*H gates) -> gate -> SO2Conv2 (H -> C) -> inverse rotation
    times the envelope -> sum over the edges of each centre (no normalisation).

    With ``checkpoint_chunk`` set (an edge count) and autograd recording, the
    edges are processed in chunks whose intermediate tensors are not kept but
    recomputed in the backward pass: the memory of the edge activations is then
    that of one chunk, for about one more forward pass of the edge work.
    """

    checkpoint_chunk: int | None = None

    def __init__(self, layout: CoefficientLayout, sphere_channels: int, hidden_channels: int,
                 num_experts: int, radial_widths: list[int]) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.lmax = layout.lmax
        self.so2_conv_1 = SO2Convolution(layout, 2 * sphere_channels, hidden_channels,
                                         num_experts, radial_widths=radial_widths,
                                         gate_channels=layout.lmax * hidden_channels)
        self.so2_conv_2 = SO2Convolution(layout, hidden_channels, sphere_channels, num_experts)
        self.layout = layout

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_scalars: torch.Tensor,
                wigner: torch.Tensor, wigner_inv_envelope: torch.Tensor,
                routing: ExpertRouting | None) -> torch.Tensor:
        chunk = self.checkpoint_chunk
        if chunk is None or not torch.is_grad_enabled():
            messages = self.messages(x, edge_index, edge_scalars, wigner, wigner_inv_envelope,
                                     routing)
            return sum_onto_atoms(messages, edge_index[1], x.shape[0])
        out = torch.zeros_like(x)
        # split(), not index arithmetic: under torch.compile the edge count stays symbolic
        pieces = zip(edge_index.split(chunk, dim=1), edge_scalars.split(chunk),
                     wigner.split(chunk), wigner_inv_envelope.split(chunk))
        for index, (edges, scalars, rotation, inverse) in enumerate(pieces):
            part = None if routing is None else routing.rows(index * chunk,
                                                             index * chunk + edges.shape[1])
            messages = checkpoint(self.messages, x, edges, scalars, rotation, inverse, part,
                                  use_reentrant=False)
            out = out + sum_onto_atoms(messages, edges[1], x.shape[0])
        return out

    def messages(self, x: torch.Tensor, edge_index: torch.Tensor, edge_scalars: torch.Tensor,
                 wigner: torch.Tensor, wigner_inv_envelope: torch.Tensor,
                 routing: ExpertRouting | None) -> torch.Tensor:
        """(E, (lmax+1)**2, C): each edge's message in the centre's frame, not yet summed."""
        source, centre = edge_index
        pairs = gather_pairs(x, source, centre)
        rotated = rotate_edges(wigner, pairs).split(self.layout.m_groups, dim=1)
        groups, gates = self.so2_conv_1(rotated, routing, edge_scalars)
        gates = torch.sigmoid(gates).view(gates.shape[0], self.lmax, self.hidden_channels)
        groups = self.gate(groups, gates)
        groups, _ = self.so2_conv_2(groups, routing)
        return rotate_edges(wigner_inv_envelope, torch.cat(groups, dim=1))

    def gate(self, groups: list[torch.Tensor], gates: torch.Tensor) -> list[torch.Tensor]:
        """SiLU on l = 0, the gate g[l-1] (E, lmax, H) on every coefficient of degree
        l >= 1, group by group: m = 0 holds l = 0..lmax, the +-m groups l = m..lmax
        twice. (A gather of the gates to all coefficients instead costs an
        accumulating scatter in the backward pass, the slowest step of a CPU call.)"""
        m0 = groups[0]
        gated = [torch.cat((F.silu(m0[:, :1]), m0[:, 1:] * gates), dim=1)]
        for m, group in enumerate(groups[1:], start=1):
            pair = group.view(group.shape[0], 2, self.layout.m_sizes[m], self.hidden_channels)
            gated.append((pair * gates[:, None, m - 1:]).view(group.shape))
        return gated


class SpectralFeedForward(nn.Module):
    """Atom-wise: ``SO3Linear_2(gate(SO3Linear_1(x), sigmoid(SiLU(Linear(x_l0)))))``."""

    def __init__(self, lmax: int, sphere_channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.scalar_mlp = nn.Sequential(nn.Linear(sphere_channels, lmax * hidden_channels),
                                        nn.SiLU())
        self.so3_linear_1 = SO3Linear(sphere_channels, hidden_channels, lmax)
        self.so3_linear_2 = SO3Linear(hidden_channels, sphere_channels, lmax)
        self.register_buffer("gate_index", degree_index(lmax)[1:] - 1, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = torch.sigmoid(self.scalar_mlp(x[:, 0])).view(x.shape[0], -1, self.hidden_channels)
        y = self.so3_linear_1(x)
        y = torch.cat((F.silu(y[:, :1]), y[:, 1:] * gates.index_select(1, self.gate_index)),
                      dim=1)
        return self.so3_linear_2(y)


class ESCNBlock(nn.Module):
    """``x += Edgewise(norm_1(x) + system embedding on l0)``; ``x += FF(norm_2(x))``."""

    def __init__(self, layout: CoefficientLayout, sphere_channels: int, hidden_channels: int,
                 num_experts: int, radial_widths: list[int]) -> None:
        super().__init__()
        self.norm_1 = EquivariantRMSNorm(layout.lmax, sphere_channels)
        self.edge_wise = Edgewise(layout, sphere_channels, hidden_channels, num_experts,
                                  radial_widths)
        self.norm_2 = EquivariantRMSNorm(layout.lmax, sphere_channels)
        self.atom_wise = SpectralFeedForward(layout.lmax, sphere_channels, hidden_channels)

    def forward(self, x: torch.Tensor, system_embedding: torch.Tensor, edge_index: torch.Tensor,
                edge_scalars: torch.Tensor, wigner: torch.Tensor,
                wigner_inv_envelope: torch.Tensor, routing: ExpertRouting | None) -> torch.Tensor:
        """system_embedding: (N, C), the system's charge/spin/task embedding per atom."""
        y = self.norm_1(x)
        y = torch.cat((y[:, :1] + system_embedding[:, None], y[:, 1:]), dim=1)
        x = x + self.edge_wise(y, edge_index, edge_scalars, wigner, wigner_inv_envelope, routing)
        return x + self.atom_wise(self.norm_2(x))
