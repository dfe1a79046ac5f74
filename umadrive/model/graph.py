"""Radius graphs with periodic boundaries, as UMA's graph generation defines them.

Conventions (fairchem's): ``edge_index[0]`` is the neighbour j, ``edge_index[1]``
the centre i, and the edge vector is

    v_ij = pos[j] + cell_offsets @ cell[batch[j]] - pos[i]       (Å)

with ``cell`` holding lattice vectors as rows and ``cell_offsets`` integer-valued.
An edge is kept when ``lower < |v_ij|² <= cutoff²``; ``lower`` is 1e-4 Å² for
version 1 and 0 for version 2 (fairchem's two internal generators; they find the
same edges otherwise). Distances are computed with the formula above from the
positions given, i.e. exactly as the model will compute them.

Periodicity is per system and per lattice direction; a non-periodic direction's
lattice vector may be zero. Positions need not be wrapped into the cell: the
search runs on wrapped copies and the offsets are translated back.

``max_neighbors`` (k > 0) thins crowded centres the way fairchem's inference does:
non-strict keeps every neighbour with ``d² <= d²_(k+1) + 0.01 Å²`` (ties and
near-ties survive, so at least k+1 are kept when that many exist); strict keeps
exactly the k nearest. ``max_neighbors=0`` keeps all.

A batch without any edge yields an empty graph, which the model runs on as is
(fairchem instead adds one placeholder edge beyond the cutoff, whose envelope,
and hence contribution, is 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from umadrive.cell import CellError, check_cell

DEGENERACY_TOLERANCE = 0.01
"""Å²: the non-strict max_neighbors rule keeps ``d² <= d²_(k+1) + this``."""

_LOWER_BOUND = {1: 1e-4, 2: 0.0}  # Å², per generator version
_BINS_PER_CUTOFF = 2  # bin edge cutoff/2, search ±2 bins
_CANDIDATE_CHUNK = 1 << 21  # candidate pairs materialised at once


class GraphInputError(ValueError):
    """Inputs that cannot be turned into a radius graph (including a cell
    :func:`umadrive.cell.check_cell` refuses)."""


@dataclass
class RadiusGraph:
    """Edges of a batch of systems.

    edge_index: (2, E) long; [0] neighbour j, [1] centre i; sorted by centre
        (so grouped by system in batch order); by distance within a centre when
        max_neighbors thinned the list.
    cell_offsets: (E, 3) float (the cell's dtype), integer-valued, in units of
        cell rows: ``v_ij = pos[j] + cell_offsets @ cell[batch[j]] - pos[i]``.
    neighbors: (B,) long, edges per system.
    """

    edge_index: torch.Tensor
    cell_offsets: torch.Tensor
    neighbors: torch.Tensor

    def systems(self, batch: torch.Tensor, group: range) -> "RadiusGraph":
        """The edges of the consecutive systems ``group`` of the batch whose atoms
        belong to the systems ``batch`` (N,), as the graph of those systems alone
        (atom indices counted from the group's first atom)."""
        system = batch[self.edge_index[1]]
        keep = (system >= group.start) & (system < group.stop)
        first = int(torch.searchsorted(batch, torch.tensor(group.start, device=batch.device)))
        return RadiusGraph(edge_index=self.edge_index[:, keep] - first,
                           cell_offsets=self.cell_offsets[keep],
                           neighbors=self.neighbors[group.start:group.stop])


def radius_graph(
    positions: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor,
    batch: torch.Tensor,
    *,
    cutoff: float,
    max_neighbors: int,
    version: int = 2,
    strict: bool = False,
) -> RadiusGraph:
    """All pairs within ``cutoff`` over periodic images, per system of the batch.

    positions: (N, 3) Å. cell: (B, 3, 3) Å, lattice vectors as rows. pbc: (B, 3)
    bool. batch: (N,) long, the system of each atom, non-decreasing. Runs without
    autograd on the inputs' device. ``version`` 1 compares all pairs of a system,
    2 bins atoms on a grid first; both give the edges the module docstring defines.
    """
    _check_inputs(positions, cell, pbc, batch, cutoff, max_neighbors, version, strict)
    with torch.no_grad():
        positions, cell = positions.detach(), cell.detach().to(positions.dtype)
        centre, neighbour, offsets, distance_sq = _pairs_within(
            positions, cell, pbc, batch, cutoff, version
        )
        return _finish(centre, neighbour, offsets, distance_sq, batch, cell, max_neighbors, strict)


def vesin_graph(
    positions: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor,
    batch: torch.Tensor,
    *,
    cutoff: float,
    max_neighbors: int,
    version: int = 2,
    strict: bool = False,
) -> RadiusGraph:
    """:func:`radius_graph`'s result, with the pair search done by ``vesin``.

    The external generator for ``external_graph_gen``: vesin (a small, well-kept
    C++ neighbour-list library) finds the pairs on the CPU, one system at a time;
    the lower bound, ``max_neighbors`` rule and edge order are this module's.
    """
    import vesin

    _check_inputs(positions, cell, pbc, batch, cutoff, max_neighbors, version, strict)
    with torch.no_grad():
        device = positions.device
        positions, cell = positions.detach(), cell.detach().to(positions.dtype)
        points = positions.cpu().double().numpy()
        boxes, _ = _lattices(cell, pbc, cutoff)  # validated, full rank: vesin needs that
        periodic = pbc.cpu().numpy()
        starts = _system_starts(batch, cell.shape[0]).tolist()
        searcher = vesin.NeighborList(cutoff=cutoff, full_list=True)
        centres, neighbours, shifts = [], [], []
        for system, (start, stop) in enumerate(zip(starts[:-1], starts[1:])):
            if stop == start:
                continue
            i, j, shift = searcher.compute(
                points[start:stop], boxes[system], periodic[system].tolist(), quantities="ijS"
            )
            centres.append(i.astype(np.int64) + start)
            neighbours.append(j.astype(np.int64) + start)
            shifts.append(shift.astype(np.int64))
        if centres:
            centre = torch.from_numpy(np.concatenate(centres)).to(device)
            neighbour = torch.from_numpy(np.concatenate(neighbours)).to(device)
            offsets = torch.from_numpy(np.concatenate(shifts)).to(device)
        else:
            centre = neighbour = torch.zeros(0, dtype=torch.long, device=device)
            offsets = torch.zeros(0, 3, dtype=torch.long, device=device)
        distance_sq = _distance_sq(positions, cell, batch, centre, neighbour, offsets)
        keep = (distance_sq > _LOWER_BOUND[version]) & (distance_sq <= cutoff * cutoff)
        return _finish(
            centre[keep], neighbour[keep], offsets[keep], distance_sq[keep],
            batch, cell, max_neighbors, strict,
        )


def edge_vectors(
    positions: torch.Tensor, cell: torch.Tensor, batch: torch.Tensor, graph: RadiusGraph
) -> torch.Tensor:
    """(E, 3) Å: ``pos[j] + cell_offsets @ cell[batch[j]] - pos[i]``, differentiable
    in ``positions`` and ``cell`` (the model's forces and stress flow through it)."""
    neighbour, centre = graph.edge_index
    shifts = torch.einsum(
        "ek,ekl->el", graph.cell_offsets.to(cell.dtype), cell[batch[neighbour]]
    )
    return positions[neighbour] + shifts - positions[centre]


def _check_inputs(
    positions: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor,
    batch: torch.Tensor,
    cutoff: float,
    max_neighbors: int,
    version: int,
    strict: bool,
) -> None:
    if positions.ndim != 2 or positions.shape[1] != 3 or not positions.is_floating_point():
        raise GraphInputError(
            f"positions must be a float (N, 3) tensor, got {positions.dtype} {tuple(positions.shape)}"
        )
    n_atoms = positions.shape[0]
    if cell.ndim != 3 or cell.shape[1:] != (3, 3):
        raise GraphInputError(f"cell must be (B, 3, 3) (rows are lattice vectors), got {tuple(cell.shape)}")
    n_systems = cell.shape[0]
    if pbc.shape != (n_systems, 3) or pbc.dtype != torch.bool:
        raise GraphInputError(
            f"pbc must be a bool tensor of shape ({n_systems}, 3) to match cell, got {pbc.dtype} {tuple(pbc.shape)}"
        )
    if batch.shape != (n_atoms,) or batch.dtype != torch.long:
        raise GraphInputError(
            f"batch must be a long tensor of shape ({n_atoms},) to match positions, got {batch.dtype} {tuple(batch.shape)}"
        )
    if n_atoms and (int(batch.min()) < 0 or int(batch.max()) >= n_systems):
        raise GraphInputError(
            f"batch holds system indices {int(batch.min())}..{int(batch.max())}, but cell has {n_systems} systems"
        )
    if n_atoms > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise GraphInputError("batch must be non-decreasing: put the atoms of each system together, in system order")
    if not bool(torch.isfinite(positions).all()) or not bool(torch.isfinite(cell).all()):
        raise GraphInputError("positions and cell must be finite; got NaN or inf")
    if not (isinstance(cutoff, (int, float)) and math.isfinite(cutoff) and cutoff > 0):
        raise GraphInputError(f"cutoff must be a positive number of Å, got {cutoff!r}")
    if isinstance(max_neighbors, bool) or not isinstance(max_neighbors, int) or max_neighbors < 0:
        raise GraphInputError(f"max_neighbors must be an int >= 0 (0: no limit), got {max_neighbors!r}")
    if version not in _LOWER_BOUND:
        raise GraphInputError(f"version must be one of {sorted(_LOWER_BOUND)}, got {version!r}")
    if not isinstance(strict, bool):
        raise GraphInputError(f"strict must be a bool, got {strict!r}")


def _lattices(cell: torch.Tensor, pbc: torch.Tensor, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Per system a full-rank lattice (3, 3) and its reach (3,): the cutoff in
    units of the spacing of lattice planes along each periodic row, 0 along the
    others; ``ceil(reach)`` periodic images each way cover the cutoff sphere.

    Periodic rows are the cell's; non-periodic rows are replaced by unit vectors
    completing them to a basis (offsets along those rows are always 0, so their
    value only serves to express positions in fractional coordinates). Each
    cell passes :func:`umadrive.cell.check_cell` first.
    """
    lattices, reaches = [], []
    for system, (rows, flags) in enumerate(zip(cell.cpu().double().numpy(), pbc.cpu().numpy())):
        try:
            geometry = check_cell(rows, flags, cutoff)
        except CellError as error:
            raise GraphInputError(f"system {system}: {error}") from error
        lattices.append(geometry.lattice)
        reaches.append(geometry.reach)
    return np.array(lattices).reshape(-1, 3, 3), np.array(reaches).reshape(-1, 3)


def _system_starts(batch: torch.Tensor, n_systems: int) -> torch.Tensor:
    counts = torch.bincount(batch, minlength=n_systems)
    starts = torch.zeros(n_systems + 1, dtype=torch.long, device=batch.device)
    starts[1:] = torch.cumsum(counts, 0)
    return starts


def _pairs_within(
    positions: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor,
    batch: torch.Tensor,
    cutoff: float,
    version: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(centre, neighbour, integer offsets (E, 3), d²) of every edge within the cutoff."""
    device, dtype = positions.device, positions.dtype
    n_systems = cell.shape[0]
    lattices_np, reach_np = _lattices(cell, pbc, cutoff)
    lattices = torch.from_numpy(lattices_np).to(device, dtype)
    periodic = pbc.to(device)
    reach = torch.from_numpy(reach_np).to(device, dtype)
    reps = torch.from_numpy(np.ceil(reach_np).astype(np.int64)).to(device)

    # Wrap into the cell along periodic directions: pos = wrapped + shift @ lattice.
    fractional = torch.einsum("nl,nlk->nk", positions, torch.linalg.inv(lattices)[batch])
    shift = torch.where(periodic[batch], torch.floor(fractional), torch.zeros_like(fractional))
    fractional = fractional - shift
    shift = shift.long()
    wrapped = positions - torch.einsum("nk,nkl->nl", shift.to(dtype), lattices[batch])

    # Source points: every atom in every image of its cell that can lie within the
    # cutoff of the cell, i.e. fractional coordinates within reach of [0, 1).
    image_counts = torch.prod(2 * reps + 1, dim=1)
    per_atom = image_counts[batch]
    source_atom = torch.repeat_interleave(torch.arange(len(batch), device=device), per_atom)
    first = torch.cumsum(per_atom, 0) - per_atom
    image = torch.arange(len(source_atom), device=device) - first[source_atom]
    sides = 2 * reps[batch[source_atom]] + 1
    image_offset = torch.stack(
        (image % sides[:, 0], (image // sides[:, 0]) % sides[:, 1], image // (sides[:, 0] * sides[:, 1])),
        dim=1,
    ) - reps[batch[source_atom]]
    source_fractional = fractional[source_atom] + image_offset
    source_reach = reach[batch[source_atom]] + 1e-6
    near = (source_fractional >= -source_reach) & (source_fractional < 1 + source_reach)
    inside = (near | ~periodic[batch[source_atom]]).all(dim=1)
    source_atom, image_offset = source_atom[inside], image_offset[inside]
    source_system = batch[source_atom]
    source_points = wrapped[source_atom] + torch.einsum(
        "nk,nkl->nl", image_offset.to(dtype), lattices[source_system]
    )

    # Grid per system over the sources' bounding box (version 1: a single bin).
    low = torch.full((n_systems, 3), math.inf, dtype=dtype, device=device)
    high = torch.full((n_systems, 3), -math.inf, dtype=dtype, device=device)
    index3 = source_system.unsqueeze(1).expand(-1, 3)
    low.scatter_reduce_(0, index3, source_points, "amin")
    high.scatter_reduce_(0, index3, source_points, "amax")
    extent = torch.nan_to_num(high - low, nan=0.0, posinf=0.0, neginf=0.0).clamp(min=0.0)
    low = torch.nan_to_num(low, posinf=0.0)
    if version == 1:
        bin_size = torch.full((n_systems,), math.inf, dtype=dtype, device=device)
        reach_bins = 0
    else:
        # Bins of cutoff/2 (search ±2 bins), coarser for sparse systems so that
        # there are about as many bins as atoms.
        sources_per_system = torch.bincount(source_system, minlength=n_systems).clamp(min=1)
        volume = torch.prod(extent.clamp(min=cutoff), dim=1)
        bin_size = torch.maximum(
            torch.full_like(volume, cutoff / _BINS_PER_CUTOFF), (volume / sources_per_system) ** (1 / 3)
        )
        reach_bins = _BINS_PER_CUTOFF
    dims = (torch.floor(extent / bin_size.unsqueeze(1)).long() + 1).clamp(min=1)
    bins_per_system = torch.prod(dims, dim=1)
    bin_start = torch.cumsum(bins_per_system, 0) - bins_per_system

    def bin_coordinates(points: torch.Tensor, system: torch.Tensor) -> torch.Tensor:
        scaled = (points - low[system]) / bin_size[system].unsqueeze(1)
        return torch.minimum(torch.floor(scaled).long().clamp(min=0), dims[system] - 1)

    def bin_id(coords: torch.Tensor, system: torch.Tensor) -> torch.Tensor:
        d = dims[system]
        return bin_start[system] + coords[:, 0] + d[:, 0] * (coords[:, 1] + d[:, 1] * coords[:, 2])

    source_bins = bin_id(bin_coordinates(source_points, source_system), source_system)
    order = torch.argsort(source_bins)
    sorted_points = source_points[order]
    bin_count = torch.bincount(source_bins, minlength=int(bins_per_system.sum()))
    bin_first = torch.cumsum(bin_count, 0) - bin_count

    # For every centre, the bins within reach_bins in each direction.
    centre_coords = bin_coordinates(wrapped, batch)
    steps = torch.arange(-reach_bins, reach_bins + 1, device=device)
    neighbour_steps = torch.cartesian_prod(steps, steps, steps).reshape(-1, 3)
    coords = centre_coords.unsqueeze(1) + neighbour_steps.unsqueeze(0)  # (N, S, 3)
    valid = ((coords >= 0) & (coords < dims[batch].unsqueeze(1))).all(dim=2)
    flat_system = batch.unsqueeze(1).expand_as(valid).reshape(-1)
    flat_bins = bin_id(coords.reshape(-1, 3).clamp(min=0), flat_system)
    flat_bins = torch.where(valid.reshape(-1), flat_bins, torch.zeros_like(flat_bins))
    pair_count = torch.where(valid.reshape(-1), bin_count[flat_bins], torch.zeros_like(flat_bins))
    pair_first = bin_first[flat_bins]
    pair_centre = torch.arange(len(batch), device=device).repeat_interleave(neighbour_steps.shape[0])
    nonempty = pair_count > 0
    pair_count, pair_first, pair_centre = pair_count[nonempty], pair_first[nonempty], pair_centre[nonempty]

    # Wrapped-frame and exact distances differ by rounding only.
    prefilter = (cutoff * (1 + 1e-4)) ** 2
    found = []
    cumulative = torch.cumsum(pair_count, 0)
    total = int(cumulative[-1]) if len(cumulative) else 0
    chunk_ends = torch.arange(_CANDIDATE_CHUNK, max(total, _CANDIDATE_CHUNK), _CANDIDATE_CHUNK, device=device)
    boundaries = torch.searchsorted(cumulative, chunk_ends).tolist()
    for lo, hi in zip([0, *boundaries], [*boundaries, len(pair_count)]):
        if hi <= lo:
            continue
        counts = pair_count[lo:hi]
        # Index of each candidate among the bin-sorted sources, and its centre.
        sorted_index = torch.repeat_interleave(
            pair_first[lo:hi] - (torch.cumsum(counts, 0) - counts), counts
        ) + torch.arange(int(counts.sum()), device=device)
        centre = torch.repeat_interleave(pair_centre[lo:hi], counts)
        # Cheap test in the wrapped frame first; the exact one below uses the
        # model's formula on the few that pass.
        difference = sorted_points[sorted_index] - wrapped[centre]
        near = (difference * difference).sum(dim=1) <= prefilter
        source, centre = order[sorted_index[near]], centre[near]
        neighbour = source_atom[source]
        offsets = image_offset[source] - shift[neighbour] + shift[centre]
        distance_sq = _distance_sq(positions, cell, batch, centre, neighbour, offsets)
        keep = (distance_sq > _LOWER_BOUND[version]) & (distance_sq <= cutoff * cutoff)
        found.append((centre[keep], neighbour[keep], offsets[keep], distance_sq[keep]))
    if not found:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty, torch.zeros(0, 3, dtype=torch.long, device=device), positions.new_zeros(0)
    return tuple(torch.cat(parts) for parts in zip(*found))  # type: ignore[return-value]


def _distance_sq(
    positions: torch.Tensor,
    cell: torch.Tensor,
    batch: torch.Tensor,
    centre: torch.Tensor,
    neighbour: torch.Tensor,
    offsets: torch.Tensor,
) -> torch.Tensor:
    shifts = torch.einsum("ek,ekl->el", offsets.to(cell.dtype), cell[batch[neighbour]])
    vectors = positions[neighbour] + shifts - positions[centre]
    return (vectors * vectors).sum(dim=1)


def _finish(
    centre: torch.Tensor,
    neighbour: torch.Tensor,
    offsets: torch.Tensor,
    distance_sq: torch.Tensor,
    batch: torch.Tensor,
    cell: torch.Tensor,
    max_neighbors: int,
    strict: bool,
) -> RadiusGraph:
    """Group edges by centre, apply the max_neighbors rule, package."""
    if len(centre) > 1 and bool((centre[1:] < centre[:-1]).any()):
        order = torch.argsort(centre, stable=True)
        centre, neighbour, offsets, distance_sq = centre[order], neighbour[order], offsets[order], distance_sq[order]
    count = torch.bincount(centre, minlength=len(batch))
    if max_neighbors > 0 and len(centre) and int(count.max()) > max_neighbors:
        by_distance = torch.argsort(distance_sq, stable=True)
        order = by_distance[torch.argsort(centre[by_distance], stable=True)]
        centre, neighbour, offsets, distance_sq = centre[order], neighbour[order], offsets[order], distance_sq[order]
        first = torch.cumsum(count, 0) - count
        if strict:
            rank = torch.arange(len(centre), device=centre.device) - first[centre]
            keep = rank < max_neighbors
        else:
            crowded = count > max_neighbors
            threshold = torch.full_like(count, math.inf, dtype=distance_sq.dtype)
            threshold[crowded] = distance_sq[first[crowded] + max_neighbors] + DEGENERACY_TOLERANCE
            keep = distance_sq <= threshold[centre]
        centre, neighbour, offsets = centre[keep], neighbour[keep], offsets[keep]
    return RadiusGraph(
        edge_index=torch.stack((neighbour, centre)),
        cell_offsets=offsets.to(cell.dtype),
        neighbors=torch.bincount(batch[centre], minlength=cell.shape[0]),
    )

