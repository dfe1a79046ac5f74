"""Energy head and the per-task output scaling of UMA.

The network predicts a normalised energy; per task (dataset) a checkpoint holds
a normaliser ``(mean, rmsd)`` for energy, forces and stress and per-element
reference energies. Physical outputs are::

    E = E_net * rmsd_E + mean_E + sum_i ref[Z_i]     (eV)
    F = -dE_net/dpos * rmsd_F + mean_F                (eV/Å)
    sigma = (1/V) dE_net/dstrain * rmsd_S + mean_S    (eV/Å³)

A task without its own forces/stress normaliser uses the energy one (as fairchem does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from umadrive.model.mole import MixtureOfLinearExperts, linear_per_system


class EnergyMLP(nn.Module):
    """Per-atom energy ``MLP_{C->H->H->1}`` with SiLU, from the l = 0 node features."""

    def __init__(self, sphere_channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.energy_block = nn.Sequential(
            nn.Linear(sphere_channels, hidden_channels), nn.SiLU(),
            nn.Linear(hidden_channels, hidden_channels), nn.SiLU(),
            nn.Linear(hidden_channels, 1))

    def forward(self, node_features: torch.Tensor) -> torch.Tensor:
        """node_features (N, (lmax+1)**2, C) -> (N,) per-atom energies."""
        return self.energy_block(node_features[:, 0]).view(-1)


class SharedHead(nn.Module):
    """One energy MLP shared by all datasets (fairchem's DatasetSpecificSingleHeadWrapper)."""

    def __init__(self, sphere_channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.head = EnergyMLP(sphere_channels, hidden_channels)

    def forward(self, node_features: torch.Tensor, atom_counts: tuple[int, ...],
                experts: torch.Tensor, merged: bool = False) -> torch.Tensor:
        """(N,) per-atom energies; the routing arguments are unused (one MLP for all)."""
        return self.head(node_features)


class ExpertEnergyMLP(nn.Module):
    """``MLP_{C->H->H->1}`` with SiLU whose three linear layers are per-dataset experts
    (weights (n_experts, out, in), shared bias), as fairchem's MLP_EFS_Head wrapped
    in a DatasetSpecificMoEWrapper."""

    def __init__(self, num_experts: int, sphere_channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.energy_block = nn.Sequential(
            MixtureOfLinearExperts(num_experts, sphere_channels, hidden_channels, bias=True),
            nn.SiLU(),
            MixtureOfLinearExperts(num_experts, hidden_channels, hidden_channels, bias=True),
            nn.SiLU(),
            MixtureOfLinearExperts(num_experts, hidden_channels, 1, bias=True))


class ExpertHead(nn.Module):
    """One energy MLP per dataset expert, chosen one-hot by each system's task (UMA 1.2+).

    ``forward(x, atom_counts, experts)``: x (N, (lmax+1)**2, C) node features of B
    systems with ``atom_counts[b]`` consecutive atoms each; experts (B,) long, the
    expert of each system. ``merged=True`` uses the weights kept by :meth:`merge`.
    """

    def __init__(self, num_experts: int, sphere_channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.head = ExpertEnergyMLP(num_experts, sphere_channels, hidden_channels)

    @property
    def layers(self) -> list[MixtureOfLinearExperts]:
        return [module for module in self.head.energy_block
                if isinstance(module, MixtureOfLinearExperts)]

    def merge(self, expert: int) -> None:
        """Keep expert ``expert``'s weights as each layer's merged weight."""
        for layer in self.layers:
            layer.merged = layer.weights[expert].detach()

    def forward(self, node_features: torch.Tensor, atom_counts: tuple[int, ...],
                experts: torch.Tensor, merged: bool = False) -> torch.Tensor:
        """(N,) per-atom energies."""
        x = node_features[:, 0]
        for index, layer in enumerate(self.layers):
            if index:
                x = F.silu(x)
            if merged:
                x = layer(x, None)
            else:
                x = linear_per_system(x, layer.weights[experts], layer.bias, atom_counts)
        return x.view(-1)


@dataclass(frozen=True)
class Normalizer:
    mean: float
    rmsd: float


@dataclass(frozen=True)
class TaskOutputs:
    """Output scaling for one task (dataset): normalisers and element references (101,)."""

    energy: Normalizer
    forces: Normalizer
    stress: Normalizer
    element_references: torch.Tensor | None


def task_outputs(tasks_config: list[dict], datasets: list[str]) -> dict[str, TaskOutputs]:
    """Per dataset of the model, its output scaling from a checkpoint's ``tasks_config``.

    Datasets without an energy task are left out; raises ValueError when none
    of ``datasets`` has one.
    """
    by_dataset: dict[str, dict[str, dict]] = {}
    for task in tasks_config:
        for dataset in task["datasets"]:
            by_dataset.setdefault(dataset, {})[task["property"]] = task
    outputs = {}
    for dataset in datasets:
        tasks = by_dataset.get(dataset, {})
        if "energy" not in tasks:
            continue
        energy_task = tasks["energy"]

        def normalizer(prop: str) -> Normalizer:
            source = tasks.get(prop, energy_task)["normalizer"]
            return Normalizer(mean=float(source["mean"]), rmsd=float(source["rmsd"]))

        references = energy_task.get("element_references")
        outputs[dataset] = TaskOutputs(
            energy=normalizer("energy"), forces=normalizer("forces"),
            stress=normalizer("stress"),
            element_references=None if references is None
            else torch.as_tensor(references, dtype=torch.float64))
    if not outputs:
        raise ValueError(f"the checkpoint's tasks_config has no energy task for any of the "
                         f"model's datasets {datasets}")
    return outputs


def system_energy(atom_energies: torch.Tensor, batch: torch.Tensor, num_systems: int) -> torch.Tensor:
    """(B,) float64 sums of per-atom energies (N,) over each system."""
    return atom_energies.new_zeros(num_systems, dtype=torch.float64).index_add(
        0, batch, atom_energies.to(torch.float64))
