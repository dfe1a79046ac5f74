"""The eSCN-MD backbone with mixture-of-linear-experts routing (UMA 1.0 to 1.2.1).

``ESCNMDBackbone.forward`` maps atoms, a graph and per-system charge, spin and
task to node features ``(N, (lmax+1)**2, C)`` after the final norm. Every size
comes from :class:`~umadrive.model.config.BackboneConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from umadrive.model.blocks import ESCNBlock, EquivariantRMSNorm, RadialMLP
from umadrive.model.config import BackboneConfig
from umadrive.model.edge_ops import rotate_edges, sum_onto_atoms
from umadrive.model.mole import ExpertRouting
from umadrive.model.so3 import CoefficientLayout, EdgeRotation, wigner_j

#: Index offsets of the charge (-100..100) and spin (0..100) embedding tables.
CHARGE_OFFSET, CHARGE_ROWS = 100, 201
SPIN_OFFSET, SPIN_ROWS = 0, 101
#: fairchem's fixed rescaling of the edge-degree sum ("sqrt of the average degree").
EDGE_DEGREE_RESCALE = 5.0


@dataclass(frozen=True)
class GraphInputs:
    """What the backbone needs about one batch of B systems and E edges.

    numbers: (N,) long atomic numbers. batch: (N,) long system of each atom.
    edge_index: (2, E) long, [0] neighbour j (source), [1] centre i; edges grouped
        by system in system order. edge_vectors: (E, 3) Å, ``pos_j + shift - pos_i``.
    charge, spin: (B,) long. datasets: B task names.
    """

    numbers: torch.Tensor
    batch: torch.Tensor
    edge_index: torch.Tensor
    edge_vectors: torch.Tensor
    charge: torch.Tensor
    spin: torch.Tensor
    datasets: tuple[str, ...]


class TableEmbedding(nn.Module):
    """A learned vector per integer value (charge or spin), index = value + offset."""

    def __init__(self, rows: int, offset: int, channels: int) -> None:
        super().__init__()
        self.offset = offset
        self.rand_emb = nn.Embedding(rows, channels)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return self.rand_emb(values + self.offset)


class DatasetEmbedding(nn.Module):
    """A learned vector per task (dataset) name. With a ``mapping`` (UMA 1.2+) a name
    uses the vector of the name it maps to; every name still has its own entry
    (the checkpoints hold one, used or not)."""

    def __init__(self, datasets: list[str], channels: int,
                 mapping: dict[str, str] | None = None) -> None:
        super().__init__()
        self.mapping = mapping or {name: name for name in datasets}
        self.dataset_emb_dict = nn.ModuleDict({name: nn.Embedding(1, channels)
                                               for name in datasets})

    def forward(self, datasets: tuple[str, ...]) -> torch.Tensor:
        return torch.cat([self.dataset_emb_dict[self.mapping[name]].weight
                          for name in datasets])


class GaussianBasis(nn.Module):
    """``exp(-((d - mu_k) / (2 delta))**2 / 2)`` on ``mu = linspace(0, cutoff, n)``."""

    def __init__(self, cutoff: float, size: int) -> None:
        super().__init__()
        self.register_buffer("centres", torch.linspace(0.0, cutoff, size, dtype=torch.float64),
                             persistent=False)
        self.coefficient = -0.5 / (2.0 * cutoff / (size - 1)) ** 2

    def forward(self, distance: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.coefficient * (distance[:, None] - self.centres) ** 2)


def polynomial_envelope(scaled_distance: torch.Tensor) -> torch.Tensor:
    """``1 - 21 u^5 + 35 u^6 - 15 u^7`` for u < 1, else 0 (smooth to 2nd order at 1)."""
    u = scaled_distance
    value = 1 + u.pow(5) * (-21.0 + u * (35.0 - 15.0 * u))
    return torch.where(u < 1, value, torch.zeros_like(u))


class EdgeDegreeEmbedding(nn.Module):
    """Initial l > 0 features: ``x_i += sum_j (D^T env)[:, :, m=0] RadialMLP(edge) / 5``."""

    def __init__(self, layout: CoefficientLayout, channels: int, radial_widths: list[int]) -> None:
        super().__init__()
        self.m0 = layout.m_sizes[0]
        self.channels = channels
        self.rad_func = RadialMLP([*radial_widths, self.m0 * channels])

    def forward(self, x: torch.Tensor, edge_scalars: torch.Tensor, centre: torch.Tensor,
                wigner_inv_envelope: torch.Tensor) -> torch.Tensor:
        radial = self.rad_func(edge_scalars).view(edge_scalars.shape[0], self.m0, self.channels)
        embedding = rotate_edges(wigner_inv_envelope[:, :, :self.m0], radial)
        return x + sum_onto_atoms(embedding / EDGE_DEGREE_RESCALE, centre, x.shape[0])


class ESCNMDBackbone(nn.Module):
    """eSCN-MD message passing with MoLE SO(2) convolutions; parameter names as in UMA."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        c = config.sphere_channels
        self.layout = CoefficientLayout(config.lmax, config.mmax)
        for l in range(config.lmax + 1):
            self.register_buffer(f"Jd_{l}", wigner_j(l).clone())
        self.rotation = EdgeRotation(self.layout, torch.float64)

        self.sphere_embedding = nn.Embedding(config.max_num_elements, c)
        self.charge_embedding = TableEmbedding(CHARGE_ROWS, CHARGE_OFFSET, c)
        self.spin_embedding = TableEmbedding(SPIN_ROWS, SPIN_OFFSET, c)
        self.dataset_embedding = DatasetEmbedding(config.datasets, c, config.dataset_mapping)
        self.mix_csd = nn.Linear(3 * c, c)

        self.distance_expansion = GaussianBasis(config.cutoff, config.num_distance_basis)
        self.source_embedding = nn.Embedding(config.max_num_elements, config.edge_channels)
        self.target_embedding = nn.Embedding(config.max_num_elements, config.edge_channels)
        radial_widths = [config.num_distance_basis + 2 * config.edge_channels,
                         config.edge_channels, config.edge_channels]
        self.edge_degree_embedding = EdgeDegreeEmbedding(self.layout, c, radial_widths)
        self.blocks = nn.ModuleList(
            ESCNBlock(self.layout, c, config.hidden_channels, config.num_experts, radial_widths)
            for _ in range(config.num_layers))
        self.norm = EquivariantRMSNorm(config.lmax, c)

        experts = config.num_experts
        router_in = (2 if config.use_composition_embedding else 1) * c
        self.routing_mlp = nn.Sequential(
            nn.Linear(router_in, 2 * experts), nn.SiLU(),
            nn.Linear(2 * experts, 2 * experts), nn.SiLU(),
            nn.Linear(2 * experts, experts), nn.SiLU())
        if config.use_composition_embedding:
            self.composition_embedding = nn.Embedding(config.max_num_elements, c)

    def check_wigner_constants(self, tolerance: float = 1e-5) -> None:
        """Raise ValueError if the loaded ``Jd_l`` buffers are not this module's convention;
        then reset them to their exact float64 values (a checkpoint may hold them rounded)."""
        for l in range(self.config.lmax + 1):
            loaded = getattr(self, f"Jd_{l}")
            exact = wigner_j(l).to(loaded.device)
            error = float((loaded.double() - exact).abs().max())
            if error > tolerance:
                raise ValueError(
                    f"checkpoint buffer Jd_{l} differs from the real spherical-harmonic convention "
                    f"umadrive implements by {error:.2e} (> {tolerance:g}); this checkpoint uses a "
                    f"different basis and cannot be evaluated correctly")
            loaded.copy_(exact.to(loaded.dtype))

    def system_embedding(self, charge: torch.Tensor, spin: torch.Tensor,
                         datasets: tuple[str, ...]) -> torch.Tensor:
        """(B, C): ``SiLU(mix_csd([E_charge; E_spin; E_task]))``."""
        mixed = torch.cat((self.charge_embedding(charge), self.spin_embedding(spin),
                           self.dataset_embedding(datasets)), dim=1)
        return F.silu(self.mix_csd(mixed))

    def expert_coefficients(self, numbers: torch.Tensor, batch: torch.Tensor,
                            system_embedding: torch.Tensor) -> torch.Tensor:
        """(B, n_experts): ``softmax(router([composition; system embedding])) + 0.005``.

        The composition is the mean of ``composition_embedding[Z]`` over a system's
        atoms; UMA 1.0 and UMA-S-1.2 divide the sum by n + 1 instead (fairchem reduces
        with ``include_self=True`` onto zeros for those; the released UMA-S-1.2 was
        trained that way, so reproducing it is what matches its weights).
        """
        features = [system_embedding]
        if self.config.use_composition_embedding:
            per_atom = self.composition_embedding(numbers)
            total = per_atom.new_zeros(system_embedding.shape).index_add(0, batch, per_atom)
            counts = torch.bincount(batch, minlength=system_embedding.shape[0])
            counts = counts.to(per_atom.dtype) + (1 if self.config.composition_includes_self else 0)
            features.insert(0, total / counts.clamp(min=1)[:, None])
        logits = self.routing_mlp(torch.cat(features, dim=1))
        return torch.softmax(logits, dim=1) + 0.005

    def set_checkpoint_chunk(self, edges: int | None) -> None:
        """Recompute the edge-wise work in chunks of ``edges`` edges in the backward
        pass (activation checkpointing); ``None`` keeps every activation."""
        if edges is not None and edges < 1:
            raise ValueError(f"checkpoint chunk must be at least 1 edge, got {edges}")
        for block in self.blocks:
            block.edge_wise.checkpoint_chunk = edges

    def forward(self, inputs: GraphInputs, *, merged: bool = False,
                wigner: torch.Tensor | None = None,
                message_passing: "MessagePassing | None" = None) -> torch.Tensor:
        """Node features (N, (lmax+1)**2, C) after the final norm.

        merged: use the experts' merged weights (``MixtureOfLinearExperts.merge``,
            made for this batch's composition, charge, spin and task) instead of routing.
        wigner: (E, n_edge, (lmax+1)**2) per-edge rotations if computed elsewhere.
        message_passing: a stand-in for :meth:`message_passing` (e.g. its compiled form).
        """
        system = self.system_embedding(inputs.charge, inputs.spin, inputs.datasets)
        routing = None
        if not merged:
            centre = inputs.edge_index[1]
            edge_counts = torch.bincount(inputs.batch[centre], minlength=system.shape[0])
            routing = ExpertRouting.grouped(
                self.expert_coefficients(inputs.numbers, inputs.batch, system),
                tuple(edge_counts.tolist()))
        targets = None
        if self.balances_channels:
            natoms = torch.bincount(inputs.batch, minlength=system.shape[0])
            targets = torch.stack((inputs.charge, inputs.spin - 1, natoms), dim=1).to(system.dtype)
        run = message_passing or self.message_passing
        return run(inputs.numbers, inputs.batch, inputs.edge_index, inputs.edge_vectors,
                   system, routing, wigner, targets)

    @property
    def balances_channels(self) -> bool:
        """Whether charge or spin balanced channels are configured (UMA 1.2+)."""
        return self.config.charge_channels[1] > 0 or self.config.spin_channels[1] > 0

    def balance_channels(self, x: torch.Tensor, batch: torch.Tensor,
                         targets: torch.Tensor) -> torch.Tensor:
        """Shift the balanced l = 0 channels of each system by a constant so that their
        sum over the system's atoms is the total charge (targets[:, 0]) or spin - 1
        (targets[:, 1]). x: (N, (lmax+1)**2, C); targets: (B, 3), the third column
        the atom count of each system."""
        natoms = targets[:, 2]
        for column, (start, end) in enumerate((self.config.charge_channels,
                                               self.config.spin_channels)):
            if end == start:
                continue
            channels = x[:, 0, start:end]
            sums = channels.new_zeros(targets.shape[0], end - start).index_add(0, batch, channels)
            corrections = (sums - targets[:, column, None]) / natoms[:, None]
            scalars = torch.cat((x[:, 0, :start], channels - corrections[batch],
                                 x[:, 0, end:]), dim=1)
            x = torch.cat((scalars[:, None], x[:, 1:]), dim=1)
        return x

    def message_passing(self, numbers: torch.Tensor, batch: torch.Tensor,
                        edge_index: torch.Tensor, edge_vectors: torch.Tensor,
                        system: torch.Tensor, routing: ExpertRouting | None,
                        wigner: torch.Tensor | None,
                        targets: torch.Tensor | None = None) -> torch.Tensor:
        """The tensor-only part of :meth:`forward` (what ``compile`` compiles).

        system: (B, C) system embeddings. routing: expert mixtures, or None for the
        merged weights. wigner: per-edge rotations, or None to compute them here.
        targets: (B, 3) total charge, spin - 1 and atom count per system for the
        balanced channels, None when the model has none.
        """
        source, centre = edge_index
        dtype = edge_vectors.dtype
        if wigner is None:
            wigner = self.rotation(edge_vectors)
        wigner = wigner.to(dtype)
        distance = torch.linalg.vector_norm(edge_vectors, dim=1)
        envelope = polynomial_envelope(distance / self.config.cutoff)
        wigner_inv_envelope = wigner.transpose(1, 2) * envelope[:, None, None]
        edge_scalars = torch.cat((self.distance_expansion(distance).to(dtype),
                                  self.source_embedding(numbers[source]),
                                  self.target_embedding(numbers[centre])), dim=1)

        system_per_atom = system[batch]
        x = torch.zeros((numbers.shape[0], self.layout.num_node_coefficients,
                         self.config.sphere_channels), dtype=dtype, device=numbers.device)
        x[:, 0] = self.sphere_embedding(numbers) + system_per_atom
        x = self.edge_degree_embedding(x, edge_scalars, centre, wigner_inv_envelope)
        for block in self.blocks:
            x = block(x, system_per_atom, edge_index, edge_scalars, wigner,
                      wigner_inv_envelope, routing)
            if targets is not None:
                x = self.balance_channels(x, batch, targets)
        return self.norm(x)


MessagePassing = Callable[..., torch.Tensor]
"""The signature of :meth:`ESCNMDBackbone.message_passing`."""
