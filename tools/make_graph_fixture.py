"""Record fairchem's own radius graphs, for umadrive's graph tests.

Run in the oracle venv (fairchem-core 2.24.0), from the repository root:

    /path/to/oracle/bin/python tools/make_graph_fixture.py

Writes ``tests/data/graph_fairchem.json``: a few structures (wrapped into their
cells, as fairchem's ``AtomicData.from_ase`` does before graph generation) and,
for each generator setting, the edges fairchem's ``generate_graph`` returns as
sorted ``[centre, neighbour, offset_a, offset_b, offset_c]`` rows plus its
per-system edge counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from ase.build import bulk, fcc111, molecule
from fairchem.core.graph.compute import generate_graph

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "graph_fairchem.json"
CUTOFF = 6.0
SETTINGS = [  # (version, max_neighbors, strict)
    (1, 0, False),
    (2, 0, False),
    (1, 20, False),
    (2, 20, False),
    (2, 20, True),
]


def structures():
    primitive = bulk("Si", "diamond", a=5.43)
    primitive.rattle(0.05, seed=2)
    sheared = bulk("Cu", "fcc", a=3.6) * (2, 2, 2)
    sheared.set_cell(sheared.cell.array + [[0, 0, 0], [0.7, 0, 0], [0.3, 0.5, 0]], scale_atoms=True)
    sheared.rattle(0.05, seed=4)
    slab = fcc111("Pt", (2, 2, 3), vacuum=5.0)
    slab.rattle(0.03, seed=3)
    systems = {
        "primitive_si": primitive,
        "triclinic_cu": sheared,
        "slab_pt_TTF": slab,
        "ethanol": molecule("CH3CH2OH"),
    }
    for atoms in systems.values():
        atoms.wrap()
    return systems


class _Batch(dict):
    """The attribute-access dict fairchem's graph code reads."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        self[key] = value


def fairchem_graph(systems, version, max_neighbors, strict):
    natoms = torch.tensor([len(a) for a in systems])
    pbc = torch.stack([torch.tensor(a.pbc) for a in systems])
    data = _Batch(
        pos=torch.cat([torch.tensor(a.positions) for a in systems]),
        cell=torch.stack([torch.tensor(a.cell.array) for a in systems]),
        pbc=pbc,
        natoms=natoms,
        batch=torch.repeat_interleave(torch.arange(len(systems)), natoms),
    )
    out = generate_graph(
        data,
        cutoff=CUTOFF,
        max_neighbors=max_neighbors,
        enforce_max_neighbors_strictly=strict,
        radius_pbc_version=version,
        pbc=pbc,
    )
    neighbour, centre = out["edge_index"].tolist()
    offsets = out["cell_offsets"].round().long().tolist()
    edges = sorted([c, n, *o] for c, n, o in zip(centre, neighbour, offsets))
    return {"edges": edges, "neighbors": out["neighbors"].tolist()}


def main() -> None:
    systems = structures()
    cases = []
    for version, max_neighbors, strict in SETTINGS:
        for name, atoms in systems.items():
            cases.append({
                "systems": [name], "version": version, "max_neighbors": max_neighbors, "strict": strict,
                **fairchem_graph([atoms], version, max_neighbors, strict),
            })
        if version == 2:  # v1 refuses batches that mix periodic and non-periodic systems
            names = list(systems)
            cases.append({
                "systems": names, "version": version, "max_neighbors": max_neighbors, "strict": strict,
                **fairchem_graph([systems[n] for n in names], version, max_neighbors, strict),
            })
    fixture = {
        "cutoff": CUTOFF,
        "structures": {
            name: {
                "positions": atoms.positions.tolist(),
                "cell": atoms.cell.array.tolist(),
                "pbc": atoms.pbc.tolist(),
            }
            for name, atoms in systems.items()
        },
        "cases": cases,
    }
    OUT.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(cases)} cases)")


if __name__ == "__main__":
    main()
