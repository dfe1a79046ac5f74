"""The bundled demo model: it loads by name, it is as accurate on freshly made EMT
structures as its model card says, and it conserves energy in NVE.

Bounds come from ``umadrive/data/demo/metrics.json``, the numbers behind
``MODEL_CARD.md`` (written by ``tools/train_demo_model.py``).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from umadrive import get_predict_unit
from umadrive.model.checkpoint import load_checkpoint
from umadrive.model.names import resolve_model
from umadrive.model.predictor import System
from umadrive.structure import Structure

REPO = Path(__file__).resolve().parents[2]
DEMO_DIR = REPO / "umadrive" / "data" / "demo"
METRICS = json.loads((DEMO_DIR / "metrics.json").read_text())

# A fresh sample (another seed than the training data's) of the card's categories.
FRESH_SEED = 777
FRESH_COUNTS = {"bulk": 2, "strained": 3, "alloy": 4, "vacancy": 1, "slab": 2, "rattled": 3}
# The sample is small, so its MAE scatters around the card's: allowed factor.
SAMPLE_FACTOR = 2.5
# NVE: allowed factor over the card's float64 drift and excursion. A 0.1 ps run's
# fitted slope is noisier than the card's 0.5 ps one, hence the floor (meV/atom/ps).
# For scale: forces off by 2 % drift by about 2 meV/atom/ps in this run.
NVE_FACTOR = 10.0
NVE_DRIFT_FLOOR = 0.01


def _tool(name: str):
    """A module from ``tools/`` (scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo_unit():
    return get_predict_unit("demo")


def test_demo_name_resolves_to_the_bundled_checkpoint(demo_unit):
    path = resolve_model("demo")
    assert path == DEMO_DIR / "uma-demo.pt"
    assert path.stat().st_size <= 5_000_000
    checkpoint = load_checkpoint(path)
    assert checkpoint.source == "umadrive"
    assert checkpoint.model_config["backbone"]["model_version"] == 1.1
    assert demo_unit.datasets == ("omat",)
    # loadable without executing code: umadrive's format is plain torch data
    assert isinstance(torch.load(path, weights_only=True), dict)


def test_model_card_states_what_the_model_is():
    card = (DEMO_DIR / "MODEL_CARD.md").read_text()
    assert "demonstration fit to EMT, not a scientific model" in card
    for element in ("Cu", "Ag", "Au", "Ni", "Pd", "Pt", "Al"):
        assert element in METRICS["elements"]
        assert element in card
    model = METRICS["test"]["float32"]["all"]
    row = (f"| demo model, float32 (default) | {model['energy_mae_meV_per_atom']:.1f} "
           f"| {model['forces_mae_eV_per_A']:.3f} | {model['stress_mae_eV_per_A3']:.4f} ")
    assert row in card


@pytest.fixture(scope="module")
def fresh_structures():
    return _tool("make_demo_data").generate(FRESH_SEED, FRESH_COUNTS)


def _card_expectation(structures, key: str) -> float:
    """The card's per-category MAE, averaged with the sample's category weights."""
    per_category = METRICS["test"]["float32"]["categories"]
    weights = [len(a) if key == "forces_mae_eV_per_A" else 1 for a in structures]
    values = [per_category[a.info["category"]][key] for a in structures]
    if key == "stress_mae_eV_per_A3":
        pairs = [(w, v) for w, v, a in zip(weights, values, structures) if a.pbc.all()]
        weights, values = zip(*pairs)
    return float(np.average(values, weights=weights))


def test_fresh_emt_structures_within_the_card_errors(demo_unit, fresh_structures):
    make_demo_data = _tool("make_demo_data")
    systems = [System(numbers=a.numbers, structure=Structure(a.positions, a.cell.array, a.pbc),
                      task="omat", charge=0, spin=0) for a in fresh_structures]
    predictions = demo_unit.predict(systems)
    energy = [abs(p.energy - a.get_potential_energy()) / len(a)
              for p, a in zip(predictions, fresh_structures)]
    forces = np.concatenate([np.abs(p.forces - a.get_forces()).ravel()
                             for p, a in zip(predictions, fresh_structures)])
    voigt = ([0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1])
    stress = np.concatenate([np.abs(p.stress[voigt] - a.get_stress(voigt=True))
                             for p, a in zip(predictions, fresh_structures) if a.pbc.all()])
    measured = {"energy_mae_meV_per_atom": 1000 * float(np.mean(energy)),
                "forces_mae_eV_per_A": float(np.mean(forces)),
                "stress_mae_eV_per_A3": float(np.mean(stress))}

    baseline = make_demo_data.baseline_errors(METRICS["element_energies_eV"], fresh_structures)
    for key, value in measured.items():
        bound = SAMPLE_FACTOR * _card_expectation(fresh_structures, key)
        assert value <= bound, f"{key}: {value:.4g} on fresh structures > {bound:.4g} (card)"
        # and it learned something: far better than per-element energies / zero forces
        assert value < 0.5 * baseline[key], f"{key}: {value:.4g} vs baseline {baseline[key]:.4g}"


def test_nve_energy_drift_is_small():
    """Energy conservation on a short float64 run of ``tools/demo_nve.py`` (the card
    has float32 and float64 over longer runs): the drift and the largest excursion
    of the total energy stay within a few times the card's float64 numbers. The
    script runs in its own process, with one torch thread."""
    completed = subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo_nve.py"), "--model", "demo", "--steps",
         "100", "--repeat", "2", "--dtype", "float64", "--threads", "1"],
        capture_output=True, text=True, timeout=240, check=False)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    card = METRICS["nve"]["float64"]
    assert result["atoms"] == 32 and result["steps"] == 100
    assert abs(result["drift_meV_per_atom_per_ps"]) <= NVE_FACTOR * max(
        abs(card["drift_meV_per_atom_per_ps"]), NVE_DRIFT_FLOOR), result
    assert result["max_deviation_meV_per_atom"] <= NVE_FACTOR * card["max_deviation_meV_per_atom"], result
