"""The periodic radius graph against ASE's brute-force neighbour list, the
max_neighbors rule against a direct implementation of it, and vesin's generator
against ours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.neighborlist import neighbor_list

from umadrive.model.graph import (
    DEGENERACY_TOLERANCE,
    GraphInputError,
    RadiusGraph,
    edge_vectors,
    radius_graph,
    vesin_graph,
)

CUTOFF = 6.0
FAIRCHEM_GRAPHS = json.loads((Path(__file__).resolve().parents[1] / "data" / "graph_fairchem.json").read_text())
GENERATORS = {
    "v1": lambda *args, **kw: radius_graph(*args, version=1, **kw),
    "v2": lambda *args, **kw: radius_graph(*args, version=2, **kw),
    "vesin": vesin_graph,
}


def _rattled(atoms: Atoms, seed: int, amount: float = 0.05) -> Atoms:
    atoms = atoms.copy()
    atoms.rattle(amount, seed=seed)
    return atoms


def _structures() -> dict[str, Atoms]:
    sheared = bulk("Cu", "fcc", a=3.6) * (2, 2, 2)
    sheared.set_cell(sheared.cell.array + [[0, 0, 0], [1.1, 0, 0], [0.4, -0.7, 0]], scale_atoms=True)
    slab_zero_c = fcc111("Pt", (2, 2, 3), vacuum=4.0)
    slab_zero_c.cell[2] = 0.0
    wire = Atoms("C4", positions=[[0, 0, 0], [1.2, 0.3, 1.3], [0.1, 1.1, 2.6], [1.0, 0.9, 3.8]],
                 cell=[[0, 0, 0], [0, 0, 0], [0, 0, 5.1]], pbc=[False, False, True])
    unwrapped = _rattled(bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1), 5)
    unwrapped.positions += np.array([3, -2, 7]) @ unwrapped.cell.array  # far outside the cell
    unwrapped.positions[0] += unwrapped.cell.array[1] * -4
    thin = _rattled(bulk("Al", "fcc", a=4.05, cubic=True) * (3, 3, 1), 6)  # 4 Å < cutoff along c
    return {
        "fcc_supercell": _rattled(bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2), 1),
        "one_atom_cell": bulk("Cu", "fcc", a=3.6),  # 343+ images needed
        "two_atom_primitive": _rattled(bulk("Si", "diamond", a=5.43), 2),
        "triclinic": _rattled(sheared, 3),
        "slab_TTF": _rattled(fcc111("Pt", (2, 2, 3), vacuum=5.0), 4),
        "slab_zero_c_row": _rattled(slab_zero_c, 7),
        "wire_FFT": wire,
        "molecule": molecule("CH3CH2OH"),
        "unwrapped": unwrapped,
        "thin_cell": thin,
    }


STRUCTURES = _structures()


def _tensors(systems: list[Atoms], dtype=torch.float64, device="cpu"):
    positions = torch.tensor(np.concatenate([a.positions for a in systems]), dtype=dtype, device=device)
    cell = torch.tensor(np.stack([a.cell.array for a in systems]), dtype=dtype, device=device)
    pbc = torch.tensor(np.stack([a.pbc for a in systems]), device=device)
    batch = torch.repeat_interleave(
        torch.arange(len(systems)), torch.tensor([len(a) for a in systems])
    ).to(device)
    return positions, cell, pbc, batch


def _edges(graph: RadiusGraph) -> list[tuple]:
    """Sorted (centre, neighbour, offset) of every edge."""
    neighbour, centre = graph.edge_index.tolist()
    offsets = graph.cell_offsets.round().long().tolist()
    assert torch.equal(graph.cell_offsets, graph.cell_offsets.round())
    return sorted(zip(centre, neighbour, map(tuple, offsets)))


def _reference(atoms: Atoms, cutoff: float = CUTOFF, offset: int = 0):
    """ASE's neighbour list: (centre, neighbour, shift) -> distance."""
    i, j, shifts, distances = neighbor_list("ijSd", atoms, cutoff)
    return {
        (a + offset, b + offset, tuple(s)): d
        for a, b, s, d in zip(i.tolist(), j.tolist(), shifts.tolist(), distances.tolist())
    }


@pytest.mark.parametrize("generator", GENERATORS)
@pytest.mark.parametrize("name", STRUCTURES)
def test_matches_ase_neighbor_list(name, generator):
    atoms = STRUCTURES[name]
    positions, cell, pbc, batch = _tensors([atoms])
    graph = GENERATORS[generator](positions, cell, pbc, batch, cutoff=CUTOFF, max_neighbors=0)
    reference = _reference(atoms)
    assert _edges(graph) == sorted(reference)
    assert graph.neighbors.tolist() == [len(reference)]
    # Edge vectors, as the model computes them, have ASE's lengths.
    lengths = edge_vectors(positions, cell, batch, graph).norm(dim=1)
    expected = [reference[edge] for edge in zip(
        graph.edge_index[1].tolist(), graph.edge_index[0].tolist(),
        map(tuple, graph.cell_offsets.long().tolist()))]
    np.testing.assert_allclose(lengths.numpy(), expected, rtol=0, atol=1e-10)
    # Grouped by system and sorted by centre, as the model expects.
    assert bool((graph.edge_index[1][1:] >= graph.edge_index[1][:-1]).all())


def _case_id(case: dict) -> str:
    mode = "strict" if case["strict"] else "nonstrict"
    return f"{'+'.join(case['systems'])}-v{case['version']}-k{case['max_neighbors']}-{mode}"


@pytest.mark.parametrize("case", FAIRCHEM_GRAPHS["cases"], ids=_case_id)
def test_matches_fairchem_generate_graph(case):
    """Edges and per-system counts equal those fairchem-core 2.24 itself generated
    (tools/make_graph_fixture.py), for both versions and the max_neighbors modes."""
    systems = [FAIRCHEM_GRAPHS["structures"][name] for name in case["systems"]]
    atoms = [Atoms(f"X{len(s['positions'])}", positions=s["positions"], cell=s["cell"], pbc=s["pbc"])
             for s in systems]
    graph = radius_graph(*_tensors(atoms), cutoff=FAIRCHEM_GRAPHS["cutoff"],
                         max_neighbors=case["max_neighbors"], version=case["version"], strict=case["strict"])
    assert sorted([c, n, *o] for c, n, o in _edges(graph)) == case["edges"]
    assert graph.neighbors.tolist() == case["neighbors"]


@pytest.mark.parametrize("generator", GENERATORS)
def test_batch_of_mixed_systems_equals_one_by_one(generator):
    systems = [STRUCTURES[n] for n in ("molecule", "slab_TTF", "two_atom_primitive", "triclinic", "wire_FFT")]
    graph = GENERATORS[generator](*_tensors(systems), cutoff=CUTOFF, max_neighbors=0)
    expected, offset = {}, 0
    for atoms in systems:
        expected |= _reference(atoms, offset=offset)
        offset += len(atoms)
    assert _edges(graph) == sorted(expected)
    assert graph.neighbors.tolist() == [len(_reference(a)) for a in systems]


def test_system_without_atoms_in_batch():
    """A system with no atoms gets no edges and the others are unaffected."""
    water = molecule("H2O")
    positions, cell, pbc, batch = _tensors([water])
    cell = torch.zeros(3, 3, 3, dtype=torch.float64)
    pbc = torch.zeros(3, 3, dtype=torch.bool)
    batch = torch.full_like(batch, 1)  # systems 0 and 2 are empty
    graph = radius_graph(positions, cell, pbc, batch, cutoff=CUTOFF, max_neighbors=0)
    assert graph.neighbors.tolist() == [0, 6, 0]


def test_version_lower_bounds():
    """Version 1 drops pairs closer than 0.01 Å (d² <= 1e-4 Å²); version 2 only d = 0."""
    atoms = Atoms("H3", positions=[[0, 0, 0], [0.005, 0, 0], [1.0, 0, 0]])
    args = _tensors([atoms])
    close = {(0, 1), (1, 0)}
    v1 = {(c, n) for c, n, _ in _edges(radius_graph(*args, cutoff=CUTOFF, max_neighbors=0, version=1))}
    v2 = {(c, n) for c, n, _ in _edges(radius_graph(*args, cutoff=CUTOFF, max_neighbors=0, version=2))}
    assert v2 - v1 == close
    assert len(v2) == 6


def test_float32_positions_give_the_same_graph():
    atoms = STRUCTURES["triclinic"]
    graph64 = radius_graph(*_tensors([atoms]), cutoff=CUTOFF, max_neighbors=0)
    graph32 = radius_graph(*_tensors([atoms], dtype=torch.float32), cutoff=CUTOFF, max_neighbors=0)
    assert _edges(graph32) == _edges(graph64)
    assert graph32.cell_offsets.dtype == torch.float32


def _rule(reference: dict, k: int, strict: bool) -> set:
    """The max_neighbors rule applied directly to a reference neighbour list."""
    by_centre: dict[int, list] = {}
    for edge, distance in reference.items():
        by_centre.setdefault(edge[0], []).append((distance**2, edge))
    kept = set()
    for entries in by_centre.values():
        entries.sort()
        if strict:
            kept.update(edge for _, edge in entries[:k])
        elif len(entries) > k:
            limit = entries[k][0] + DEGENERACY_TOLERANCE
            kept.update(edge for d2, edge in entries if d2 <= limit)
        else:
            kept.update(edge for _, edge in entries)
    return kept


@pytest.mark.parametrize("generator", GENERATORS)
@pytest.mark.parametrize("k", [5, 20, 40])
def test_max_neighbors_non_strict_rule(generator, k):
    atoms = STRUCTURES["fcc_supercell"]  # 78 neighbours within 6 Å per atom
    graph = GENERATORS[generator](*_tensors([atoms]), cutoff=CUTOFF, max_neighbors=k)
    expected = _rule(_reference(atoms), k, strict=False)
    assert _edges(graph) == sorted(expected)
    counts = torch.bincount(graph.edge_index[1])
    assert int(counts.min()) >= k + 1
    assert graph.neighbors.tolist() == [len(expected)]


@pytest.mark.parametrize("generator", GENERATORS)
def test_max_neighbors_strict_keeps_exactly_k_nearest(generator):
    atoms = STRUCTURES["fcc_supercell"]
    graph = GENERATORS[generator](*_tensors([atoms]), cutoff=CUTOFF, max_neighbors=20, strict=True)
    assert _edges(graph) == sorted(_rule(_reference(atoms), 20, strict=True))
    assert torch.bincount(graph.edge_index[1]).tolist() == [20] * len(atoms)


def test_max_neighbors_keeps_degenerate_shells_whole():
    """Perfect fcc: shells of 12, 6, 24 neighbours. With k = 20 the 21st neighbour
    lies in the third shell, so the whole shell stays: 42 per atom, not 20 or 21."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (3, 3, 3)
    graph = radius_graph(*_tensors([atoms]), cutoff=CUTOFF, max_neighbors=20)
    assert torch.bincount(graph.edge_index[1]).tolist() == [42] * len(atoms)


def test_max_neighbors_leaves_sparse_centres_alone():
    """Centres with at most k + 1 neighbours keep them all."""
    atoms = molecule("CH3CH2OH")  # 8 neighbours per atom within 6 Å
    full = radius_graph(*_tensors([atoms]), cutoff=CUTOFF, max_neighbors=0)
    for k in (7, 8, 100):
        assert _edges(radius_graph(*_tensors([atoms]), cutoff=CUTOFF, max_neighbors=k)) == _edges(full)


def test_empty_graph():
    atoms = Atoms("Ar2", positions=[[0, 0, 0], [10.0, 0, 0]])
    positions, cell, pbc, batch = _tensors([atoms])
    graph = radius_graph(positions, cell, pbc, batch, cutoff=CUTOFF, max_neighbors=30)
    assert graph.edge_index.shape == (2, 0) and graph.cell_offsets.shape == (0, 3)
    assert graph.neighbors.tolist() == [0]
    assert edge_vectors(positions, cell, batch, graph).shape == (0, 3)


def test_edge_vectors_carry_gradients_to_positions_and_cell():
    atoms = STRUCTURES["triclinic"]
    positions, cell, pbc, batch = _tensors([atoms])
    graph = radius_graph(positions, cell, pbc, batch, cutoff=CUTOFF, max_neighbors=0)
    positions.requires_grad_(True)
    cell.requires_grad_(True)
    vectors = edge_vectors(positions, cell, batch, graph)
    position_grad, cell_grad = torch.autograd.grad(vectors.sum(), (positions, cell))
    # Each edge adds +1 at its neighbour and -1 at its centre; the cell gets the offsets.
    expected = torch.bincount(graph.edge_index[0], minlength=len(atoms)) - torch.bincount(
        graph.edge_index[1], minlength=len(atoms))
    torch.testing.assert_close(position_grad, expected.double().unsqueeze(1).expand(-1, 3))
    torch.testing.assert_close(cell_grad[0], graph.cell_offsets.sum(0).unsqueeze(1).expand(-1, 3))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.update(positions=a["positions"][:, :2]), r"positions must be a float \(N, 3\)"),
        (lambda a: a.update(cell=a["cell"][0]), r"cell must be \(B, 3, 3\)"),
        (lambda a: a.update(pbc=a["pbc"].long()), r"pbc must be a bool tensor of shape \(1, 3\)"),
        (lambda a: a.update(batch=a["batch"].int()), r"batch must be a long tensor"),
        (lambda a: a.update(batch=a["batch"] + 1), r"system indices 1..1, but cell has 1 systems"),
        (lambda a: a.update(positions=a["positions"] * np.nan), "must be finite"),
        (lambda a: a.update(cutoff=0.0), "cutoff must be a positive number of Å, got 0.0"),
        (lambda a: a.update(max_neighbors=-1), r"max_neighbors must be an int >= 0 \(0: no limit\), got -1"),
        (lambda a: a.update(version=3), r"version must be one of \[1, 2\], got 3"),
        (lambda a: a.update(cell=a["cell"] * torch.tensor([1.0, 0.0, 1.0]).view(1, 3, 1)),
         r"system 0: the cell is periodic along lattice vector 1, but that vector is zero .* "
         r"make that direction non-periodic"),
        (lambda a: a.update(cell=a["cell"][:, [0, 0, 2]]),
         r"system 0: the cell is singular \(its periodic lattice vectors are linearly dependent\)"),
        (lambda a: a.update(cell=a["cell"] * torch.tensor([1.0, 1.0, 0.01]).view(1, 3, 1)),
         r"heights \(plane spacings\) .*, 0.072 Å .* a 6 Å cutoff needs 84 periodic images each "
         r"way along direction 2 .* limits 50 each way"),
    ],
)
def test_bad_input_is_refused(change, message):
    positions, cell, pbc, batch = _tensors([STRUCTURES["fcc_supercell"]])
    arguments = {"positions": positions, "cell": cell, "pbc": pbc, "batch": batch,
                 "cutoff": CUTOFF, "max_neighbors": 0, "version": 2}
    change(arguments)
    with pytest.raises(GraphInputError, match=message):
        radius_graph(**arguments)


def test_unsorted_batch_is_refused():
    positions, cell, pbc, batch = _tensors([molecule("H2O"), molecule("H2O")])
    with pytest.raises(GraphInputError, match="batch must be non-decreasing"):
        radius_graph(positions, cell, pbc, batch.flip(0), cutoff=CUTOFF, max_neighbors=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("version", [1, 2])
def test_cuda_matches_cpu(version):
    systems = [STRUCTURES[n] for n in ("slab_TTF", "one_atom_cell", "unwrapped", "molecule")]
    cpu = radius_graph(*_tensors(systems), cutoff=CUTOFF, max_neighbors=20, version=version)
    gpu = radius_graph(*_tensors(systems, device="cuda"), cutoff=CUTOFF, max_neighbors=20, version=version)
    assert gpu.edge_index.device.type == "cuda"
    assert _edges(RadiusGraph(gpu.edge_index.cpu(), gpu.cell_offsets.cpu(), gpu.neighbors.cpu())) == _edges(cpu)
    assert gpu.neighbors.cpu().tolist() == cpu.neighbors.tolist()
