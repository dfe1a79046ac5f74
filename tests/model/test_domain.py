"""Element domains: the demo model declares the seven metals it was trained on and
refuses others, naming them (through the predictor, the ASE calculator and
``umadrive serve`` before it serves); official checkpoints declare nothing and
keep their full range."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from ase.build import bulk, molecule

from umadrive import UMACalculator, get_predict_unit
from umadrive.model.domain import ElementDomain, ElementDomainError
from umadrive.model.predictor import InvalidSystemError, System
from umadrive.structure import Structure

DEMO_ELEMENTS = "Cu, Ag, Au, Ni, Pd, Pt, Al"  # the card's list, in atomic-number order below
DEMO_ALLOWED = "Al, Ni, Cu, Pd, Ag, Pt, Au"


@pytest.fixture(scope="module")
def demo_unit():
    return get_predict_unit("demo")


def system(atoms) -> System:
    return System(numbers=atoms.numbers,
                  structure=Structure(positions=atoms.positions, cell=atoms.cell.array,
                                      pbc=atoms.pbc),
                  task="omat", charge=0, spin=0)


def test_the_demo_checkpoint_declares_the_card_s_elements(demo_unit):
    from tests.model.test_demo_model import METRICS

    assert ", ".join(METRICS["elements"]) == DEMO_ELEMENTS
    assert demo_unit.element_domain.describe("omat") == DEMO_ALLOWED
    assert sorted(DEMO_ALLOWED.split(", ")) == sorted(DEMO_ELEMENTS.split(", "))


def copper_iron():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.symbols[1] = "Fe"
    return atoms


@pytest.mark.parametrize(("make", "named"), [
    (lambda: bulk("Fe", "bcc", a=2.87, cubic=True), "Fe"),
    (lambda: molecule("H2O"), "H, O"),
    (copper_iron, "Fe"),
], ids=["iron", "water", "copper-iron"])
def test_elements_outside_the_domain_are_refused_naming_them(demo_unit, make, named):
    atoms = make()
    message = (rf"system 0: elements {named} are outside the elements this model was trained on "
               rf"for task 'omat' \({DEMO_ALLOWED}\)")
    with pytest.raises(InvalidSystemError, match=message):
        demo_unit.predict([system(atoms)])
    atoms.calc = UMACalculator(demo_unit, task_name="omat")
    with pytest.raises(InvalidSystemError, match=message):
        atoms.get_potential_energy()


def test_elements_inside_the_domain_are_answered(demo_unit):
    alloy = bulk("Cu", "fcc", a=3.7, cubic=True)
    alloy.symbols[[1, 2]] = ["Au", "Al"]
    (prediction,) = demo_unit.predict([system(alloy)])
    assert np.isfinite(prediction.energy) and prediction.forces.shape == (4, 3)


def test_official_checkpoints_keep_the_full_range(uma_unit):
    unit = uma_unit("s1p1")
    assert unit.element_domain.allowed == {}
    (prediction,) = unit.predict([system(bulk("Fe", "bcc", a=2.87, cubic=True))])
    assert np.isfinite(prediction.energy)


def test_a_declaration_must_name_elements():
    with pytest.raises(ElementDomainError, match=r"task 'omat_energy' declares 'Xx' .* like 'Cu'"):
        ElementDomain.from_tasks([{"name": "omat_energy", "datasets": ["omat"],
                                   "elements": ["Cu", "Xx"]}])


def test_tasks_of_one_dataset_intersect_their_declarations():
    domain = ElementDomain.from_tasks([
        {"name": "e", "datasets": ["omat"], "elements": ["Cu", "Au"]},
        {"name": "f", "datasets": ["omat", "omol"], "elements": ["Cu"]},
        {"name": "s", "datasets": ["oc20"]},
    ])
    assert domain.describe("omat") == "Cu" and domain.describe("omol") == "Cu"
    assert domain.outside(np.array([29, 79, 26]), "omat") == [26, 79]
    assert domain.outside(np.array([26]), "oc20") == []


@pytest.mark.timeout(120)
def test_serve_refuses_the_template_before_serving(tmp_path):
    """``umadrive serve`` loads the model and checks the template before it
    connects: an iron template ends it with status 2 (bad input) and the message,
    and it never tries the socket (nothing listens there)."""
    import ase.io

    from tests.peers import checkout_environment

    template = tmp_path / "iron.extxyz"
    ase.io.write(template, bulk("Fe", "bcc", a=2.87, cubic=True))
    result = subprocess.run(
        [sys.executable, "-m", "umadrive", "serve", "--model", "demo", "--structure",
         str(template), "--unix", f"umadrive-domain-{tmp_path.name}", "--connect-timeout", "60"],
        capture_output=True, text=True, timeout=100, env=checkout_environment())
    assert result.returncode == 2, result.stderr
    assert (f"elements Fe are outside the elements this model was trained on for task 'omat' "
            f"({DEMO_ALLOWED})") in result.stderr, result.stderr
    assert "waiting for a server" not in result.stderr, result.stderr
