"""Train the bundled demo model: a small UMA-architecture model fitted to EMT.

Reads the data ``tools/make_demo_data.py`` writes, fits per-element reference
energies, trains the project's own :class:`umadrive.model.uma.UMA` on energies,
forces and stresses with Adam, then, through the normal loading path
(``get_predict_unit``), measures the held-out errors and an NVE run. Writes into
``umadrive/data/demo/``:

* ``uma-demo.pt``: umadrive's own checkpoint format (``save_checkpoint``), with an
  official-style ``model_config`` and ``tasks_config`` (task ``omat``);
* ``metrics.json``: every number of the card (the CI tests derive bounds from it);
* ``MODEL_CARD.md``.

Usage (training took 35 minutes on one torch thread of a busy 2-core machine)::

    python tools/make_demo_data.py
    python tools/train_demo_model.py [--steps N] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.data import atomic_numbers
from ase.io import read

import make_demo_data
from demo_nve import measure_nve
from umadrive import InferenceSettings, UMACalculator, get_predict_unit
from umadrive.model.checkpoint import Checkpoint, save_checkpoint
from umadrive.model.graph import radius_graph
from umadrive.model.predictor import System
from umadrive.model.uma import UMA, AtomsBatch
from umadrive.structure import Structure

REPO = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO / "umadrive" / "data" / "demo"
TASK = "omat"
SEED = 20260

# The architecture, in the layout of an official UMA 1.1 checkpoint's model_config.
MODEL_CONFIG: dict = {
    "backbone": {
        "model": "fairchem.core.models.uma.escn_moe.eSCNMDMoeBackbone",
        "model_version": 1.1,
        "moe_dropout": 0.0,
        "num_experts": 4,
        "use_composition_embedding": True,
        "max_num_elements": 100,
        "sphere_channels": 16,
        "lmax": 2,
        "mmax": 2,
        "otf_graph": True,
        "max_neighbors": 80,
        "cutoff": 5.0,
        "edge_channels": 16,
        "distance_function": "gaussian",
        "num_distance_basis": 32,
        "regress_forces": True,
        "regress_stress": True,
        "direct_forces": False,
        "num_layers": 2,
        "hidden_channels": 32,
        "norm_type": "rms_norm_sh",
        "act_type": "gate",
        "ff_type": "spectral",
        "chg_spin_emb_type": "rand_emb",
        "cs_emb_grad": True,
        "dataset_list": [TASK],
    },
    "heads": {
        "energyandforcehead": {
            "module": "fairchem.core.models.uma.escn_moe.DatasetSpecificSingleHeadWrapper",
            "head_cls": "fairchem.core.models.uma.escn_md.MLP_EFS_Head",
            "head_kwargs": {"wrap_property": False},
            "dataset_names": [TASK],
        }
    },
    "pass_through_head_outputs": True,
}


@dataclass(frozen=True)
class Hyperparameters:
    """Optimisation settings. Loss terms are mean squares in units of the force
    rmsd: energy per atom, force components, and virial per atom (stress x V / n)."""

    steps: int = 2000
    batch_structures: int = 8
    learning_rate: float = 2e-3
    final_learning_rate: float = 2e-5
    warmup_steps: int = 50
    energy_weight: float = 25.0
    forces_weight: float = 1.0
    stress_weight: float = 10.0
    gradient_clip: float = 10.0


def tasks_config(element_energies: dict[str, float], rmsd: float) -> list[dict]:
    """omat energy/forces/stress tasks in umadrive's plain task layout: one shared
    rmsd (as UMA's releases), zero means, the fitted element references, and the
    elements trained on (umadrive refuses others; see umadrive.model.domain)."""
    references = torch.zeros(101, dtype=torch.float64)
    for symbol, energy in element_energies.items():
        references[atomic_numbers[symbol]] = energy
    tasks = []
    for prop, level in (("energy", "system"), ("forces", "atom"), ("stress", "system")):
        tasks.append({
            "name": f"{TASK}_{prop}",
            "level": level,
            "property": prop,
            "datasets": [TASK],
            "normalizer": {"mean": 0.0, "rmsd": rmsd},
            "element_references": references.clone() if prop == "energy" else None,
            "elements": list(make_demo_data.ELEMENTS),
        })
    return tasks


@dataclass(frozen=True)
class Sample:
    """One labelled structure as tensors: energy eV, forces (n, 3) eV/Å, stress
    (3, 3) eV/Å³ (NaN when not fully periodic)."""

    atoms: Atoms
    energy: float
    forces: torch.Tensor
    stress: torch.Tensor


def to_sample(atoms: Atoms) -> Sample:
    stress = (atoms.get_stress(voigt=False) if atoms.pbc.all()
              else np.full((3, 3), np.nan))
    return Sample(atoms, atoms.get_potential_energy(),
                  torch.tensor(atoms.get_forces(), dtype=torch.float32),
                  torch.tensor(stress, dtype=torch.float32))


def collate(samples: list[Sample]) -> tuple[AtomsBatch, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(batch, energies (B,) float64, forces (N, 3), stresses (B, 3, 3))."""
    frames = [s.atoms for s in samples]
    sizes = torch.tensor([len(a) for a in frames])
    batch = AtomsBatch(
        numbers=torch.tensor(np.concatenate([a.numbers for a in frames]), dtype=torch.long),
        positions=torch.tensor(np.concatenate([a.positions for a in frames]), dtype=torch.float32),
        cell=torch.tensor(np.stack([a.cell.array for a in frames]), dtype=torch.float32),
        pbc=torch.tensor(np.stack([a.pbc for a in frames])),
        batch=torch.repeat_interleave(torch.arange(len(frames)), sizes),
        charge=torch.zeros(len(frames), dtype=torch.long),
        spin=torch.zeros(len(frames), dtype=torch.long),
        datasets=(TASK,) * len(frames),
    )
    energies = torch.tensor([s.energy for s in samples], dtype=torch.float64)
    return batch, energies, torch.cat([s.forces for s in samples]), torch.stack(
        [s.stress for s in samples])


def learning_rate(step: int, hp: Hyperparameters) -> float:
    """Linear warm-up, then cosine decay to ``final_learning_rate``."""
    if step < hp.warmup_steps:
        return hp.learning_rate * (step + 1) / hp.warmup_steps
    progress = (step - hp.warmup_steps) / max(1, hp.steps - hp.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return hp.final_learning_rate + (hp.learning_rate - hp.final_learning_rate) * cosine


def loss_terms(model: UMA, samples: list[Sample], rmsd: float) -> dict[str, torch.Tensor]:
    """Mean-square errors (energy/atom, forces, virial/atom) in units of ``rmsd``."""
    batch, energies, forces, stresses = collate(samples)
    graph = radius_graph(batch.positions, batch.cell, batch.pbc, batch.batch,
                         cutoff=model.cutoff, max_neighbors=model.max_neighbors)
    out = model(batch, graph, create_graph=True)
    sizes = torch.bincount(batch.batch).to(torch.float64)
    energy_error = (out.energy - energies) / sizes / rmsd
    periodic = batch.pbc.all(dim=1)
    volume_per_atom = (torch.linalg.det(batch.cell[periodic]).abs() / sizes[periodic].float())
    virial_error = ((out.stress[periodic] - stresses[periodic])
                    * volume_per_atom[:, None, None] / rmsd)
    terms = {
        "energy": energy_error.pow(2).mean().float(),
        "forces": ((out.forces - forces) / rmsd).pow(2).mean(),
    }
    terms["stress"] = virial_error.pow(2).mean() if bool(periodic.any()) else forces.new_zeros(())
    return terms


def train(model: UMA, samples: list[Sample], rmsd: float, hp: Hyperparameters,
          seed: int) -> float:
    """Adam over shuffled mini-batches for ``hp.steps`` steps; returns seconds taken."""
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=hp.learning_rate)
    order: list[int] = []
    start = time.perf_counter()
    running: dict[str, float] = {}
    for step in range(hp.steps):
        if len(order) < hp.batch_structures:
            order = list(rng.permutation(len(samples)))
        chosen = [samples[order.pop()] for _ in range(hp.batch_structures)]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, hp)
        terms = loss_terms(model, chosen, rmsd)
        loss = (hp.energy_weight * terms["energy"] + hp.forces_weight * terms["forces"]
                + hp.stress_weight * terms["stress"])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}: "
                                     f"{ {k: float(v) for k, v in terms.items()} }")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp.gradient_clip)
        optimizer.step()
        for name, value in terms.items():
            value = float(value.detach())
            running[name] = 0.98 * running.get(name, value) + 0.02 * value
        if step % 100 == 0 or step == hp.steps - 1:
            elapsed = time.perf_counter() - start
            remaining = elapsed / (step + 1) * (hp.steps - step - 1)
            print(f"step {step:5d}/{hp.steps}  lr {learning_rate(step, hp):.1e}  "
                  f"rms: energy {1000 * rmsd * running['energy'] ** 0.5:6.1f} meV/atom  "
                  f"forces {rmsd * running['forces'] ** 0.5:.3f} eV/Å  "
                  f"virial {1000 * rmsd * running['stress'] ** 0.5:6.1f} meV/atom  "
                  f"[{elapsed / 60:.1f} min, ~{remaining / 60:.1f} min left]", flush=True)
    return time.perf_counter() - start


def evaluate(checkpoint: Path, structures: list[Atoms], dtype: torch.dtype) -> dict:
    """Held-out MAEs of the saved model, loaded the normal way: energy meV/atom,
    forces eV/Å per component, stress eV/Å³ per Voigt component (fully periodic
    structures), overall and per category."""
    unit = get_predict_unit(checkpoint, inference_settings=InferenceSettings(
        base_precision_dtype=dtype))
    rows = []
    for start in range(0, len(structures), 16):
        chunk = structures[start:start + 16]
        systems = [System(numbers=a.numbers, structure=Structure(
            positions=a.positions, cell=a.cell.array, pbc=a.pbc), task=TASK, charge=0, spin=0)
            for a in chunk]
        for atoms, prediction in zip(chunk, unit.predict(systems)):
            stress_error = None
            if atoms.pbc.all():
                stress_error = np.abs(_voigt(prediction.stress) - atoms.get_stress(voigt=True))
            rows.append((atoms.info["category"],
                         abs(prediction.energy - atoms.get_potential_energy()) / len(atoms),
                         np.abs(prediction.forces - atoms.get_forces()).ravel(), stress_error))

    def summary(selected: list[tuple]) -> dict:
        stress = [r[3] for r in selected if r[3] is not None]
        return {
            "structures": len(selected),
            "energy_mae_meV_per_atom": 1000.0 * float(np.mean([r[1] for r in selected])),
            "forces_mae_eV_per_A": float(np.mean(np.concatenate([r[2] for r in selected]))),
            "stress_mae_eV_per_A3": float(np.mean(np.concatenate(stress))) if stress else None,
        }

    categories = sorted({r[0] for r in rows})
    return {"all": summary(rows),
            "categories": {c: summary([r for r in rows if r[0] == c]) for c in categories}}


def _voigt(stress: np.ndarray) -> np.ndarray:
    """(3, 3) -> ASE's Voigt order xx, yy, zz, yz, xz, xy."""
    return stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]


def write_card(metrics: dict, path: Path) -> None:
    """MODEL_CARD.md from ``metrics`` (every number in the card comes from there)."""
    m = metrics
    arch = MODEL_CONFIG["backbone"]
    base = m["baseline_test"]
    model32 = m["test"]["float32"]["all"]
    model64 = m["test"]["float64"]["all"]
    gpa = 1.0 / units.GPa  # eV/Å³ -> GPa

    def err(row: dict, key: str, fmt: str) -> str:
        return "—" if row.get(key) is None else format(row[key], fmt)

    lines = [
        "# umadrive demo model (`uma-demo.pt`)",
        "",
        "**A demonstration fit to EMT, not a scientific model.** It reproduces ASE's",
        "effective-medium-theory potential (itself a toy model of fcc metals) for the",
        "elements below, so that umadrive can run a real simulation offline, out of the box.",
        "Do not use its numbers for science; use a released UMA checkpoint for that.",
        "",
        f"- Elements: {', '.join(m['elements'])} (pure, and alloys of 2-3 of them). The",
        "  checkpoint declares them (`\"elements\"` in its task configs): umadrive refuses",
        "  structures with any other element, naming it, since the answers would be meaningless.",
        f"- Task: `{TASK}` only, charge 0 and spin 0 (the only values it was trained on).",
        "- Architecture: umadrive's own UMA 1.1 (eSCN-MD + mixture of linear experts),",
        "  loaded like an official checkpoint: `get_predict_unit(\"demo\")`.",
        "",
        "## Data",
        f"EMT (ASE {m['ase_version']}) energies, forces and stresses of structures made by",
        f"`tools/make_demo_data.py` (seed {m['data_seed']}): bulk near equilibrium, strongly strained",
        "cells, random substitutional alloys (Cu-Au favoured), vacancies, (111)/(100)/(110)",
        "slabs, rattled cells, and snapshots of 300-1500 K Langevin MD. 1-32 atoms each.",
        f"Train: {m['structures']['train']} structures ({m['atoms']['train']} atoms); held out: "
        f"{m['structures']['test']} structures ({m['atoms']['test']} atoms), 10 % of every",
        "category (whole MD runs held out).",
        "",
        "| category | train | test |",
        "|---|---|---|",
        *[f"| {c} | {n['train']} | {n['test']} |" for c, n in m["categories"].items()],
        "",
        "## Architecture",
        "| setting | value |",
        "|---|---|",
        *[f"| {k} | {arch[k]} |" for k in (
            "sphere_channels", "hidden_channels", "edge_channels", "lmax", "mmax", "num_layers",
            "num_experts", "num_distance_basis", "cutoff", "max_neighbors")],
        f"| parameters | {m['parameters']} |",
        f"| file size | {m['file_bytes'] / 1e6:.2f} MB |",
        "",
        "## Training",
        "Element references fitted first (least squares of the energy on the composition);",
        f"normaliser rmsd {m['rmsd']:.4f} eV/Å (RMS training force component). Adam,",
        f"{m['hyperparameters']['steps']} steps of {m['hyperparameters']['batch_structures']} "
        f"structures, learning rate {m['hyperparameters']['learning_rate']:g} (warm-up, cosine "
        f"decay to {m['hyperparameters']['final_learning_rate']:g}),",
        f"loss weights energy/atom {m['hyperparameters']['energy_weight']:g}, forces "
        f"{m['hyperparameters']['forces_weight']:g}, virial/atom "
        f"{m['hyperparameters']['stress_weight']:g}; float32; seed {m['seed']}.",
        f"Training wall time {m['training_minutes']:.1f} min "
        f"({60 * m['training_minutes'] / m['hyperparameters']['steps']:.2f} s/step) with "
        f"{m['threads']} torch thread(s) on {m['machine']}, shared with other jobs",
        f"(torch {m['torch_version']}).",
        "",
        "## Held-out errors vs EMT",
        "Mean absolute errors on the held-out split. Baseline: per-element energies fitted on",
        "the training split, zero forces, zero stress.",
        "",
        "| | energy (meV/atom) | forces (eV/Å) | stress (eV/Å³) | stress (GPa) |",
        "|---|---|---|---|---|",
        f"| baseline | {base['energy_mae_meV_per_atom']:.1f} | {base['forces_mae_eV_per_A']:.3f} "
        f"| {base['stress_mae_eV_per_A3']:.4f} | {base['stress_mae_eV_per_A3'] * gpa:.2f} |",
        f"| demo model, float32 (default) | {model32['energy_mae_meV_per_atom']:.1f} "
        f"| {model32['forces_mae_eV_per_A']:.3f} | {model32['stress_mae_eV_per_A3']:.4f} "
        f"| {model32['stress_mae_eV_per_A3'] * gpa:.2f} |",
        f"| demo model, float64 | {model64['energy_mae_meV_per_atom']:.1f} "
        f"| {model64['forces_mae_eV_per_A']:.3f} | {model64['stress_mae_eV_per_A3']:.4f} "
        f"| {model64['stress_mae_eV_per_A3'] * gpa:.2f} |",
        "",
        "Per category (float32):",
        "",
        "| category | structures | energy (meV/atom) | forces (eV/Å) | stress (eV/Å³) |",
        "|---|---|---|---|---|",
        *[f"| {c} | {r['structures']} | {r['energy_mae_meV_per_atom']:.1f} "
          f"| {r['forces_mae_eV_per_A']:.3f} | {err(r, 'stress_mae_eV_per_A3', '.4f')} |"
          for c, r in m["test"]["float32"]["categories"].items()],
        "",
        "## Energy conservation (NVE)",
        "Velocity Verlet (ASE) with `UMACalculator`, random 50:50 CuAu, started from",
        "Maxwell-Boltzmann velocities; drift = slope of a straight-line fit to the total",
        "energy (`tools/demo_nve.py`).",
        "",
        "| precision | atoms | steps | dt (fs) | mean T (K) | drift (meV/atom/ps) | max abs(E(t) - E(0)) (meV/atom) |",
        "|---|---|---|---|---|---|---|",
        *[f"| {name} | {r['atoms']} | {r['steps']} | {r['timestep_fs']:g} "
          f"| {r['mean_temperature_K']:.0f} | {r['drift_meV_per_atom_per_ps']:.4f} "
          f"| {r['max_deviation_meV_per_atom']:.4f} |" for name, r in m["nve"].items()],
        "",
        "## Reproduce",
        "```bash",
        "python tools/make_demo_data.py     # about 1 min, writes tools/out/demo_data/",
        "python tools/train_demo_model.py   # trains, evaluates, writes this card",
        "python tools/demo_nve.py           # the NVE row again",
        "```",
        "Threads and other load on the machine change float rounding, so a rerun gives a",
        "close but not bit-identical model.",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=make_demo_data.DEFAULT_OUT)
    parser.add_argument("--out", type=Path, default=DEMO_DIR)
    parser.add_argument("--steps", type=int, default=Hyperparameters.steps)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--nve-steps", type=int, default=500)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    hp = Hyperparameters(steps=args.steps)

    data_summary = json.loads((args.data / "summary.json").read_text())
    train_atoms = read(args.data / "train.extxyz", ":")
    test_atoms = read(args.data / "test.extxyz", ":")
    element_energies = make_demo_data.fit_element_energies(train_atoms)
    rmsd = float(np.sqrt(np.mean(np.concatenate(
        [a.get_forces().ravel() for a in train_atoms]) ** 2)))
    print(f"{len(train_atoms)} training structures; element energies "
          f"{ {k: round(v, 3) for k, v in element_energies.items()} }; rmsd {rmsd:.3f} eV/Å")

    torch.manual_seed(args.seed)
    tasks = tasks_config(element_energies, rmsd)
    model = UMA(MODEL_CONFIG, tasks).to(torch.float32).train()
    samples = [to_sample(a) for a in train_atoms]
    seconds = train(model, samples, rmsd, hp, args.seed)

    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = args.out / "uma-demo.pt"
    save_checkpoint(checkpoint_path, Checkpoint(
        model_config=MODEL_CONFIG, state_dict=model.state_dict(), tasks_config=tasks,
        source="umadrive"))

    test = {name: evaluate(checkpoint_path, test_atoms, dtype)
            for name, dtype in (("float32", torch.float32), ("float64", torch.float64))}
    nve = {}
    for name, dtype in (("float32", torch.float32), ("float64", torch.float64)):
        unit = get_predict_unit(checkpoint_path, inference_settings=InferenceSettings(
            base_precision_dtype=dtype))
        nve[name] = measure_nve(UMACalculator(unit), repeat=3, steps=args.nve_steps)
        print(f"NVE {name}: {json.dumps(nve[name])}", flush=True)

    metrics = {
        "seed": args.seed,
        "data_seed": data_summary["seed"],
        "elements": list(make_demo_data.ELEMENTS),
        "structures": data_summary["structures"],
        "atoms": data_summary["atoms"],
        "categories": data_summary["categories"],
        "element_energies_eV": element_energies,
        "rmsd": rmsd,
        "hyperparameters": asdict(hp),
        "parameters": sum(p.numel() for p in model.parameters()),
        "file_bytes": checkpoint_path.stat().st_size,
        "training_minutes": seconds / 60,
        "threads": args.threads,
        "machine": f"a {os.cpu_count()}-core {platform.machine()} machine",
        "torch_version": torch.__version__,
        "ase_version": __import__("ase").__version__,
        "baseline_test": make_demo_data.baseline_errors(element_energies, test_atoms),
        "test": test,
        "nve": nve,
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_card(metrics, args.out / "MODEL_CARD.md")
    print(json.dumps({"baseline": metrics["baseline_test"], "model": test["float32"]["all"]},
                     indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
