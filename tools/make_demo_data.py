"""Make the demo model's training data: EMT labels for fcc metals and their alloys.

Seeded and reproducible. Writes, under ``--out`` (default ``tools/out/demo_data``):

* ``train.extxyz`` and ``test.extxyz``: ``ase.io`` extended XYZ; every frame
  carries ``energy`` (eV), ``forces`` ((n, 3) eV/Å) and, when periodic in all
  three directions, ``stress`` (Voigt, eV/Å³, ASE sign), plus ``info["category"]``;
* ``summary.json``: counts, generation time, the per-element energy fit and the
  baseline's errors on the held-out split (the numbers the model card compares
  against).

The held-out split is 10 % of every category, chosen by the seed. The
baseline predicts ``E = sum_i e[Z_i]`` (a least-squares fit on the training
split), zero forces and zero stress.

Usage: ``python tools/make_demo_data.py [--seed N] [--out DIR]``. About a minute
on one core.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import bulk, fcc100, fcc110, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers, reference_states
from ase.io import write
from ase.md.langevin import Langevin

ELEMENTS: tuple[str, ...] = ("Cu", "Ag", "Au", "Ni", "Pd", "Pt", "Al")
DEFAULT_SEED = 20260
TEST_FRACTION = 0.1
DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "demo_data"

Generator = np.random.Generator


def lattice_constant(symbols: Sequence[str]) -> float:
    """Vegard's-law fcc lattice constant (Å) for a list of chemical symbols."""
    return float(np.mean([reference_states[atomic_numbers[s]]["a"] for s in symbols]))


def pick_species(rng: Generator, alloy_probability: float) -> list[str]:
    """One element, or 2-3 for an alloy; Cu-Au (the demo's system) is favoured."""
    if rng.random() >= alloy_probability:
        return [str(rng.choice(ELEMENTS))]
    if rng.random() < 0.3:
        return ["Cu", "Au"]
    return [str(s) for s in rng.choice(ELEMENTS, size=int(rng.integers(2, 4)), replace=False)]


def decorate(atoms: Atoms, species: Sequence[str], rng: Generator) -> Atoms:
    """Random occupation of ``atoms``' sites by ``species`` at a random composition."""
    if len(species) > 1:
        weights = rng.dirichlet(np.ones(len(species)))
        atoms.set_chemical_symbols(list(rng.choice(species, size=len(atoms), p=weights)))
    else:
        atoms.set_chemical_symbols([species[0]] * len(atoms))
    return atoms


def fcc_cell(species: Sequence[str], rng: Generator, max_atoms: int = 32) -> Atoms:
    """A small periodic fcc supercell (1-32 atoms) randomly occupied by ``species``,
    at the Vegard lattice constant of the occupation actually drawn."""
    shapes = [
        ("primitive", (1, 1, 1)),
        ("primitive", (2, 1, 1)),
        ("cubic", (1, 1, 1)),
        ("primitive", (2, 2, 2)),
        ("cubic", (1, 1, 2)),
        ("cubic", (2, 2, 1)),
        ("primitive", (3, 3, 3)),
        ("cubic", (2, 2, 2)),
    ]
    if len(species) > 1:  # alloys need room for their disorder
        shapes = shapes[3:]
    shapes = [s for s in shapes if (4 if s[0] == "cubic" else 1) * int(np.prod(s[1])) <= max_atoms]
    kind, repeat = shapes[int(rng.integers(len(shapes)))]
    atoms = bulk("Cu", "fcc", a=1.0, cubic=(kind == "cubic")).repeat(repeat)
    decorate(atoms, species, rng)
    atoms.set_cell(atoms.cell * lattice_constant(atoms.get_chemical_symbols()), scale_atoms=True)
    return atoms


def strain(atoms: Atoms, rng: Generator, diagonal: float, shear: float) -> Atoms:
    """Deform the cell by ``1 + eps`` with ``eps`` symmetric, diagonal entries
    uniform in ±``diagonal`` and off-diagonal ones in ±``shear``."""
    eps = np.diag(rng.uniform(-diagonal, diagonal, 3))
    off = rng.uniform(-shear, shear, 3)
    eps[0, 1] = eps[1, 0] = off[0]
    eps[0, 2] = eps[2, 0] = off[1]
    eps[1, 2] = eps[2, 1] = off[2]
    atoms.set_cell(atoms.cell @ (np.eye(3) + eps), scale_atoms=True)
    return atoms


def rattle(atoms: Atoms, rng: Generator, sigma: float) -> Atoms:
    """Add Gaussian noise of standard deviation ``sigma`` (Å) to every position."""
    atoms.positions += rng.normal(0.0, sigma, atoms.positions.shape)
    return atoms


def make_bulk(rng: Generator) -> list[Atoms]:
    """A pure element near equilibrium: ±2 % isotropic strain, 0.01 Å noise."""
    atoms = fcc_cell(pick_species(rng, alloy_probability=0.0), rng)
    atoms.set_cell(atoms.cell * (1 + rng.uniform(-0.02, 0.02)), scale_atoms=True)
    return [rattle(atoms, rng, 0.01)]


def make_strained(rng: Generator) -> list[Atoms]:
    """Strongly strained cells: ±6 % normal and ±4 % shear strain."""
    atoms = fcc_cell(pick_species(rng, alloy_probability=0.4), rng)
    return [rattle(strain(atoms, rng, diagonal=0.06, shear=0.04), rng, 0.02)]


def make_alloy(rng: Generator) -> list[Atoms]:
    """Random substitutional alloys of 2-3 elements, mildly strained and rattled."""
    atoms = fcc_cell(pick_species(rng, alloy_probability=1.0), rng)
    return [rattle(strain(atoms, rng, diagonal=0.02, shear=0.01), rng, 0.05)]


def make_vacancy(rng: Generator) -> list[Atoms]:
    """A 27- or 32-atom cell with one or two atoms removed."""
    species = pick_species(rng, alloy_probability=0.5)
    atoms = fcc_cell(species, rng)
    while len(atoms) < 27:
        atoms = fcc_cell(species, rng)
    for _ in range(int(rng.integers(1, 3))):
        del atoms[int(rng.integers(len(atoms)))]
    return [rattle(atoms, rng, 0.05)]


def make_slab(rng: Generator) -> list[Atoms]:
    """A (111), (100) or (110) slab, 2x2 surface cell, 3-5 layers, 6 Å vacuum on
    each side; periodic in the surface plane only."""
    species = pick_species(rng, alloy_probability=0.5)
    build = (fcc111, fcc100, fcc110)[int(rng.integers(3))]
    atoms = build("Cu", size=(2, 2, int(rng.integers(3, 6))), a=1.0, vacuum=0.0)
    decorate(atoms, species, rng)
    a = lattice_constant(atoms.get_chemical_symbols())
    atoms.set_cell(atoms.cell * a, scale_atoms=True)
    atoms.center(vacuum=6.0, axis=2)
    atoms.info.pop("adsorbate_info", None)
    return [rattle(atoms, rng, 0.05)]


def make_rattled(rng: Generator) -> list[Atoms]:
    """Far-from-equilibrium local environments: 0.03-0.15 Å noise."""
    atoms = fcc_cell(pick_species(rng, alloy_probability=0.5), rng)
    return [rattle(atoms, rng, rng.uniform(0.03, 0.15))]


def make_md(rng: Generator, snapshots: int = 8) -> list[Atoms]:
    """Snapshots of a Langevin (EMT) run at a random 300-1500 K, 4 fs steps:
    100 steps to equilibrate, then one snapshot every 25 steps. The cell is
    expanded by a rough thermal-expansion factor so the run is not far from
    zero pressure."""
    temperature = float(rng.uniform(300.0, 1500.0))
    atoms = fcc_cell(pick_species(rng, alloy_probability=0.5), rng)
    while len(atoms) < 16:
        atoms = fcc_cell(pick_species(rng, alloy_probability=0.5), rng)
    expansion = 1 + 2e-5 * (temperature - 300.0)
    atoms.set_cell(atoms.cell * expansion, scale_atoms=True)
    atoms.calc = EMT()
    thermal_momentum = np.sqrt(atoms.get_masses() * units.kB * temperature)
    atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * thermal_momentum[:, None])
    dynamics = Langevin(
        atoms, 4.0 * units.fs, temperature_K=temperature, friction=0.02 / units.fs,
        fixcm=False, rng=rng,
    )
    dynamics.run(100)
    frames = []
    for _ in range(snapshots):
        dynamics.run(25)
        frame = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        frame.info["temperature_K"] = round(temperature, 1)
        frames.append(frame)
    return frames


# category -> (generator, number of calls); md yields several frames per call
CATEGORIES: dict[str, tuple[Callable[[Generator], list[Atoms]], int]] = {
    "bulk": (make_bulk, 140),
    "strained": (make_strained, 300),
    "alloy": (make_alloy, 500),
    "vacancy": (make_vacancy, 150),
    "slab": (make_slab, 200),
    "rattled": (make_rattled, 300),
    "md": (make_md, 70),
}


def label(atoms: Atoms) -> Atoms:
    """Attach EMT energy, forces and (fully periodic only) stress as a
    SinglePointCalculator, so ``ase.io`` writes and reads them."""
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        results["stress"] = atoms.get_stress(voigt=True)
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def generate(seed: int, counts: dict[str, int] | None = None) -> list[Atoms]:
    """Labelled structures, category by category in ``CATEGORIES`` order.

    counts: number of generator calls per category (default: ``CATEGORIES``'s).
    Every frame gets ``info["category"]`` and ``info["group"]``, the index of the
    generator call that made it (the frames of one MD run share it).
    """
    unknown = set(counts or {}) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"unknown categories {sorted(unknown)}; known: {list(CATEGORIES)}")
    rng = np.random.default_rng(seed)
    structures = []
    group = 0
    for category, (make, default_count) in CATEGORIES.items():
        count = default_count if counts is None else counts.get(category, 0)
        for _ in range(count):
            for atoms in make(rng):
                atoms.info["category"] = category
                atoms.info["group"] = group
                structures.append(label(atoms))
            group += 1
    return structures


def split(structures: list[Atoms], seed: int, test_fraction: float = TEST_FRACTION
          ) -> tuple[list[Atoms], list[Atoms]]:
    """(train, test): ``test_fraction`` of every category's groups, drawn with
    ``seed``. The correlated frames of one MD run (one group) stay on one side."""
    rng = np.random.default_rng(seed + 1)
    groups: dict[tuple[str, int], list[int]] = {}
    for index, atoms in enumerate(structures):
        key = (atoms.info["category"], atoms.info["group"])
        groups.setdefault(key, []).append(index)
    by_category: dict[str, list[list[int]]] = {}
    for (category, _), members in groups.items():
        by_category.setdefault(category, []).append(members)
    test_indices: set[int] = set()
    for members_list in by_category.values():
        n_test = max(1, round(test_fraction * len(members_list)))
        for choice in rng.choice(len(members_list), size=n_test, replace=False):
            test_indices.update(members_list[int(choice)])
    train = [a for i, a in enumerate(structures) if i not in test_indices]
    test = [a for i, a in enumerate(structures) if i in test_indices]
    return train, test


def composition_matrix(structures: Sequence[Atoms], elements: Sequence[str] = ELEMENTS
                       ) -> np.ndarray:
    """(n_structures, n_elements) atom counts."""
    index = {atomic_numbers[s]: k for k, s in enumerate(elements)}
    counts = np.zeros((len(structures), len(elements)))
    for row, atoms in enumerate(structures):
        for z in atoms.numbers:
            counts[row, index[int(z)]] += 1
    return counts


def fit_element_energies(structures: Sequence[Atoms]) -> dict[str, float]:
    """Per-element energies e (eV) minimising sum_s (E_s - sum_i e[Z_i])^2."""
    solution, *_ = np.linalg.lstsq(
        composition_matrix(structures),
        np.array([a.get_potential_energy() for a in structures]),
        rcond=None,
    )
    return {s: float(e) for s, e in zip(ELEMENTS, solution)}


def baseline_errors(element_energies: dict[str, float], structures: Sequence[Atoms]
                    ) -> dict[str, float]:
    """MAEs of the per-element baseline (zero forces, zero stress) on ``structures``:
    energy in meV/atom, forces in eV/Å per component, stress in eV/Å³ per Voigt
    component (fully periodic structures only)."""
    e = np.array([element_energies[s] for s in ELEMENTS])
    predicted = composition_matrix(structures) @ e
    energy_error = [
        abs(a.get_potential_energy() - p) / len(a) for a, p in zip(structures, predicted)
    ]
    forces = np.concatenate([a.get_forces().ravel() for a in structures])
    stresses = np.concatenate(
        [a.get_stress(voigt=True) for a in structures if a.pbc.all()]
    )
    return {
        "energy_mae_meV_per_atom": 1000.0 * float(np.mean(energy_error)),
        "forces_mae_eV_per_A": float(np.mean(np.abs(forces))),
        "stress_mae_eV_per_A3": float(np.mean(np.abs(stresses))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    structures = generate(args.seed)
    train, test = split(structures, args.seed)
    seconds = time.perf_counter() - start
    element_energies = fit_element_energies(train)

    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out / "train.extxyz", train, format="extxyz")
    write(args.out / "test.extxyz", test, format="extxyz")
    summary = {
        "seed": args.seed,
        "generation_seconds": round(seconds, 1),
        "elements": list(ELEMENTS),
        "structures": {"train": len(train), "test": len(test)},
        "atoms": {"train": sum(map(len, train)), "test": sum(map(len, test))},
        "categories": {
            category: {
                "train": sum(a.info["category"] == category for a in train),
                "test": sum(a.info["category"] == category for a in test),
            }
            for category in CATEGORIES
        },
        "element_energies_eV": element_energies,
        "baseline_test": baseline_errors(element_energies, test),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    print(f"{len(structures)} structures in {seconds:.0f} s -> {args.out}")
    print("| category | train | test |\n|---|---|---|")
    for category, n in summary["categories"].items():
        print(f"| {category} | {n['train']} | {n['test']} |")
    print("baseline on test:", json.dumps(summary["baseline_test"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
