"""UMACalculator: the ASE view of the predict unit and its input validation."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError

from umadrive import UMACalculator


@pytest.fixture(scope="module")
def unit(uma_unit):
    return uma_unit("s1p1")


def test_results_are_the_predict_units(unit):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=4)
    atoms.calc = UMACalculator(unit, task_name="omat")
    prediction = unit.predict([atoms.calc.system(atoms)])[0]
    assert atoms.get_potential_energy() == prediction.energy
    assert atoms.get_potential_energy(force_consistent=True) == prediction.energy
    np.testing.assert_array_equal(atoms.get_forces(), prediction.forces)
    s = prediction.stress
    np.testing.assert_array_equal(atoms.get_stress(),
                                  [s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    np.testing.assert_array_equal(atoms.get_stress(voigt=False), s)


def test_charge_and_spin_come_from_atoms_info(unit):
    atoms = molecule("H2O")
    calc = UMACalculator(unit, task_name="omol")
    assert (calc.system(atoms).charge, calc.system(atoms).spin) == (0, 1)
    atoms.info.update(charge=1, spin=2)
    assert (calc.system(atoms).charge, calc.system(atoms).spin) == (1, 2)
    atoms.calc = calc
    charged = atoms.get_potential_energy()
    atoms.info.update(charge=0, spin=1)
    assert atoms.get_potential_energy() != charged
    assert UMACalculator(unit, task_name="omat").system(molecule("H2O")).spin == 0


@pytest.mark.parametrize("info, error, match", [
    ({"charge": 1.5}, TypeError, r"atoms.info\['charge'\] must be an integer, got 1.5"),
    ({"spin": "2"}, TypeError, r"atoms.info\['spin'\] must be an integer"),
    ({"charge": True}, TypeError, r"atoms.info\['charge'\] must be an integer"),
    ({"charge": -101}, ValueError, r"atoms.info\['charge'\]=-101 is outside \[-100, 100\]"),
    ({"spin": 101}, ValueError, r"atoms.info\['spin'\]=101 is outside \[0, 100\]"),
    ({"spin": -1}, ValueError, r"outside \[0, 100\]"),
])
def test_bad_charge_or_spin_is_refused(unit, info, error, match):
    atoms = molecule("H2O")
    atoms.info.update(info)
    atoms.calc = UMACalculator(unit, task_name="omol")
    with pytest.raises(error, match=match):
        atoms.get_potential_energy()


def test_bad_structures_and_tasks_are_refused(unit):
    with pytest.raises(ValueError, match=r"task_name='mystery' is not a task of this model; "
                                         r"choose one of \["):
        UMACalculator(unit, task_name="mystery")
    calc = UMACalculator(unit, task_name="omat")
    with pytest.raises(ValueError, match="atoms is empty"):
        calc.system(molecule("H2O")[:0])
    periodic_without_cell = molecule("H2O")
    periodic_without_cell.pbc = True
    with pytest.raises(ValueError, match=r"periodic along axes \[0, 1, 2\] but its cell vectors"):
        calc.system(periodic_without_cell)
    with pytest.raises(PropertyNotImplementedError, match="stress needs a cell"):
        mol = molecule("H2O")
        mol.calc = calc
        mol.get_stress()


def test_predict_unit_refuses_unknown_elements_and_tasks(unit):
    from umadrive.model import System
    from umadrive.model.predictor import InvalidSystemError
    from umadrive.structure import Structure

    structure = Structure(np.zeros((1, 3)), np.zeros((3, 3)), np.zeros(3, bool))
    with pytest.raises(InvalidSystemError, match=r"atomic number 100 is outside 1..99"):
        unit.predict([System(np.array([100]), structure, "omat", 0, 0)])
    with pytest.raises(InvalidSystemError, match=r"task 'omatt' is not one of this model's tasks"):
        unit.predict([System(np.array([29]), structure, "omatt", 0, 0)])
    with pytest.raises(InvalidSystemError, match=r"positions have shape \(1, 3\), expected \(2, 3\)"):
        unit.predict([System(np.array([29, 29]), structure, "omat", 0, 0)])
