"""The full UMA model: backbone, energy head and per-task output scaling, with
forces and stress by automatic differentiation.

:meth:`UMA.forward` takes a batch of systems and their radius graph (built
outside, e.g. by :func:`umadrive.model.graph.radius_graph`) and returns energies
(float64, eV), forces (eV/Å) and stresses (eV/Å³, tension positive)::

    forces = -dE/dpos
    virial = sym(sum_i g_i (x) r_i) + sym(cell^T dE/dcell),   g_i = dE/dpos_i
    stress = virial / |det cell|

which is ``(1/V) dE/d(strain)`` for a symmetric strain of positions and cell; it
works for any batch, periodic or not (a system with zero cell volume has no stress).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from umadrive.model.checkpoint import Checkpoint, CheckpointError, check_state_dict_keys
from umadrive.model.config import backbone_config, head_config
from umadrive.model.escn import ESCNMDBackbone, GraphInputs, MessagePassing
from umadrive.model.graph import RadiusGraph, edge_vectors
from umadrive.model.heads import ExpertHead, SharedHead, system_energy, task_outputs


@dataclass(frozen=True)
class AtomsBatch:
    """B systems, N atoms in total, as tensors on the model's device.

    numbers: (N,) long. positions: (N, 3) Å, model dtype. cell: (B, 3, 3) Å rows.
    pbc: (B, 3) bool. batch: (N,) long, non-decreasing system index of each atom.
    charge: (B,) long, total charge. spin: (B,) long, multiplicity (0 = unset).
    datasets: B task names (e.g. "omat", "omol").
    """

    numbers: torch.Tensor
    positions: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    batch: torch.Tensor
    charge: torch.Tensor
    spin: torch.Tensor
    datasets: tuple[str, ...]

    @property
    def num_systems(self) -> int:
        return int(self.cell.shape[0])

    def systems(self, group: range) -> "AtomsBatch":
        """The consecutive systems ``group`` as a batch of their own (views, not copies)."""
        bounds = torch.tensor([group.start, group.stop], device=self.batch.device)
        first, last = torch.searchsorted(self.batch, bounds).tolist()
        return AtomsBatch(numbers=self.numbers[first:last], positions=self.positions[first:last],
                          cell=self.cell[group.start:group.stop],
                          pbc=self.pbc[group.start:group.stop],
                          batch=self.batch[first:last] - group.start,
                          charge=self.charge[group.start:group.stop],
                          spin=self.spin[group.start:group.stop],
                          datasets=self.datasets[group.start:group.stop])


@dataclass(frozen=True)
class RunOptions:
    """How :meth:`UMA.forward` evaluates the network (the results agree to rounding).

    merged: the experts' merged weights, made for this batch's one composition,
        charge, spin and task (see :mod:`umadrive.model.merge`), instead of routing.
    message_passing: a stand-in for ``backbone.message_passing`` (its compiled form).
    rotation: edge vectors (E, 3) -> per-edge Wigner matrices, computed outside the
        message passing (e.g. replayed from a CUDA graph); None computes them inside.
    """

    merged: bool = False
    message_passing: MessagePassing | None = None
    rotation: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass(frozen=True)
class ModelOutputs:
    """energy: (B,) float64 eV. forces: (N, 3) eV/Å or None. stress: (B, 3, 3) eV/Å³
    or None; rows of systems with zero cell volume are NaN."""

    energy: torch.Tensor
    forces: torch.Tensor | None
    stress: torch.Tensor | None


class UMA(nn.Module):
    """UMA 1.0 / 1.1 (``eSCNMDMoeBackbone`` + one shared ``MLP_EFS_Head``) and
    UMA 1.2 / 1.2.1 (the same backbone, balanced channels, one head expert per dataset).

    supports_single_atoms: the checkpoint says the network itself handles a lone
    atom without periodic images (UMA 1.2+); otherwise fairchem answers such a
    system from isolated-atom reference energies (see the predictor).
    """

    def __init__(self, model_config: dict, tasks_config: list[dict]) -> None:
        super().__init__()
        self.config = backbone_config(model_config)
        head = head_config(model_config)
        self.head_config = head
        self.supports_single_atoms = bool(model_config.get("supports_single_atoms", False))
        self.backbone = ESCNMDBackbone(self.config)
        channels = (self.config.sphere_channels, self.config.hidden_channels)
        module = (ExpertHead(head.num_experts, *channels) if head.experts is not None
                  else SharedHead(*channels))
        self.output_heads = nn.ModuleDict({head.name: module})
        self.head_name = head.name
        self.tasks = task_outputs(tasks_config, self.config.datasets)
        if head.datasets:
            self.tasks = {name: task for name, task in self.tasks.items() if name in head.datasets}
        self.datasets = tuple(sorted(self.tasks))
        self._build_output_tables()

    @property
    def head(self) -> SharedHead | ExpertHead:
        return self.output_heads[self.head_name]

    def head_expert(self, dataset: str) -> int:
        """The head expert of a task (0 for a shared head)."""
        experts = self.head_config.experts
        return experts[dataset] if experts is not None else 0

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, *, dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu") -> "UMA":
        """The model of a loaded checkpoint, in ``dtype`` on ``device``, in eval mode.

        Raises UnsupportedModelError for other architectures/versions and
        CheckpointError for missing or unexpected weights.
        """
        model = cls(checkpoint.model_config, checkpoint.tasks_config)
        expected = model.state_dict()
        check_state_dict_keys(expected, checkpoint.state_dict)
        wrong = [f"{key} {tuple(value.shape)} (expected {tuple(expected[key].shape)})"
                 for key, value in checkpoint.state_dict.items()
                 if tuple(value.shape) != tuple(expected[key].shape)]
        if wrong:
            raise CheckpointError("checkpoint weights with the wrong shape for its model_config: "
                                  + ", ".join(wrong))
        model.load_state_dict(checkpoint.state_dict)
        try:
            model.backbone.check_wigner_constants()
        except ValueError as error:
            raise CheckpointError(str(error)) from None
        return model.to(device=device, dtype=dtype).eval()

    @property
    def cutoff(self) -> float:
        return self.config.cutoff

    @property
    def max_neighbors(self) -> int:
        return self.config.max_neighbors

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.mix_csd.weight.dtype

    def _build_output_tables(self) -> None:
        """Normalisers and element references as float64 tables indexed by task."""
        rows = [self.tasks[name] for name in self.datasets]
        max_z = self.config.max_num_elements
        references = torch.zeros(len(rows), max_z, dtype=torch.float64)
        for index, task in enumerate(rows):
            if task.element_references is not None:
                count = min(max_z, task.element_references.shape[0])
                references[index, :count] = task.element_references[:count]
        scales = torch.tensor([[task.energy.rmsd, task.energy.mean, task.forces.rmsd,
                                task.forces.mean, task.stress.rmsd, task.stress.mean]
                               for task in rows], dtype=torch.float64)
        # Kept in float64 whatever the model dtype: not buffers, moved by _tables().
        self._references = references
        self._scales = scales

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._references.device != device:
            self._references = self._references.to(device)
            self._scales = self._scales.to(device)
        return self._references, self._scales

    def network_energy(self, atoms: AtomsBatch, edge_index: torch.Tensor,
                       edge_vectors: torch.Tensor, run: RunOptions = RunOptions()) -> torch.Tensor:
        """(B,) float64: the normalised energy the network predicts (before scaling)."""
        inputs = GraphInputs(numbers=atoms.numbers, batch=atoms.batch, edge_index=edge_index,
                             edge_vectors=edge_vectors, charge=atoms.charge, spin=atoms.spin,
                             datasets=atoms.datasets)
        wigner = None if run.rotation is None else run.rotation(edge_vectors)
        node_features = self.backbone(inputs, merged=run.merged, wigner=wigner,
                                      message_passing=run.message_passing)
        atom_counts = tuple(torch.bincount(atoms.batch, minlength=atoms.num_systems).tolist())
        experts = torch.tensor([self.head_expert(name) for name in atoms.datasets],
                               device=node_features.device)
        atom_energies = self.head(node_features, atom_counts, experts, merged=run.merged)
        return system_energy(atom_energies, atoms.batch, atoms.num_systems)

    def forward(self, atoms: AtomsBatch, graph: RadiusGraph, *, forces: bool = True,
                stress: bool = True, create_graph: bool = False,
                run: RunOptions = RunOptions()) -> ModelOutputs:
        """Energies, forces and stresses of a batch and its radius graph
        (``v = pos[j] + cell_offsets @ cell[batch[j]] - pos[i]``).

        ``create_graph=True`` keeps the graph of the derivatives (to train on forces
        or stress); otherwise the outputs are detached. ``run``: how to evaluate
        (merged experts, compiled message passing, rotations computed elsewhere).
        """
        graph = _group_by_system(graph, atoms.batch)
        with torch.enable_grad():
            positions = atoms.positions.detach().requires_grad_(forces or stress)
            cell = atoms.cell.detach().to(positions.dtype).requires_grad_(stress)
            vectors = edge_vectors(positions, cell, atoms.batch, graph)
            raw = self.network_energy(atoms, graph.edge_index, vectors, run)

        references, scales = self._tables(raw.device)
        task = torch.tensor([self.datasets.index(name) for name in atoms.datasets],
                            device=raw.device)
        system_scales = scales[task]
        atom_references = references[task[atoms.batch], atoms.numbers]
        energy = (raw * system_scales[:, 0] + system_scales[:, 1]).index_add(
            0, atoms.batch, atom_references)
        if not (forces or stress):
            return ModelOutputs(energy=energy if create_graph else energy.detach(),
                                forces=None, stress=None)

        wrt = [positions, cell] if stress else [positions]
        grads = torch.autograd.grad(raw.sum(), wrt, create_graph=create_graph)
        if not create_graph:
            energy = energy.detach()
        atom_scales = system_scales[atoms.batch].to(positions.dtype)
        force_values = -grads[0] * atom_scales[:, 2:3] + atom_scales[:, 3:4]
        stress_values = None
        if stress:
            stress_values = _stress(grads[0], grads[1], positions, cell, atoms.batch)
            stress_values = (stress_values * system_scales[:, 4, None, None].to(cell.dtype)
                             + system_scales[:, 5, None, None].to(cell.dtype))
        return ModelOutputs(energy=energy, forces=force_values if forces else None,
                            stress=stress_values)


def _group_by_system(graph: RadiusGraph, batch: torch.Tensor) -> RadiusGraph:
    """The graph with each system's edges contiguous, in system order (stable)."""
    system = batch[graph.edge_index[1]]
    if system.numel() < 2 or bool((system[1:] >= system[:-1]).all()):
        return graph
    order = torch.argsort(system, stable=True)
    return RadiusGraph(edge_index=graph.edge_index[:, order],
                       cell_offsets=graph.cell_offsets[order], neighbors=graph.neighbors)


def _stress(position_grad: torch.Tensor, cell_grad: torch.Tensor, positions: torch.Tensor,
            cell: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3): ``sym(sum_i g_i (x) r_i + cell^T dE/dcell) / |det cell|`` (NaN if det = 0)."""
    per_atom = position_grad[:, :, None] * positions[:, None, :]
    position_virial = per_atom.new_zeros(cell.shape).index_add(0, batch, per_atom)
    cell_virial = cell.transpose(1, 2) @ cell_grad
    virial = position_virial + cell_virial
    virial = (virial + virial.transpose(1, 2)) / 2
    volume = torch.linalg.det(cell).abs()
    volume = torch.where(volume > 0, volume, torch.full_like(volume, float("nan")))
    return virial / volume[:, None, None]
