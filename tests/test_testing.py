"""The checks of :mod:`umadrive.testing` pass on a correct predictor (ASE's EMT)
and fail, saying by how much, on predictors broken on purpose."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from umadrive.testing import (CheckFailed, check_batch_equals_single,
                              check_forces_finite_difference, check_rotation_equivariance,
                              check_stress_finite_strain, tolerance)

from tests.reference import emt_on, sheared_copper, small_molecule, to_structure

COPPER = sheared_copper()
STRUCTURE = to_structure(COPPER)


def emt(structures):
    return [emt_on(structure, COPPER) for structure in structures]


def broken(change):
    """EMT with ``change(structure, prediction)`` applied to each answer."""
    def predict(structures):
        return [change(structure, prediction) for structure, prediction in
                zip(structures, emt(structures))]
    return predict


def test_emt_passes_every_check():
    for report in (check_rotation_equivariance(emt, STRUCTURE),
                   check_forces_finite_difference(emt, STRUCTURE, atoms=[0, 5]),
                   check_stress_finite_strain(emt, STRUCTURE),
                   check_batch_equals_single(emt, [STRUCTURE, STRUCTURE])):
        assert report.passed and report.dtype == "float64"
        assert all(c.max_error <= c.tolerance for c in report.comparisons)
    assert [c.quantity for c in report.comparisons] == [
        "energy per atom (eV/atom)", "forces (eV/Å)", "stress (eV/Å³)"]


def test_forces_of_the_wrong_sign_fail_the_finite_difference_check():
    flipped = broken(lambda s, p: dataclasses.replace(p, forces=-p.forces))
    check_rotation_equivariance(flipped, STRUCTURE)  # still equivariant
    with pytest.raises(CheckFailed, match=r"finite-difference forces \(step 0.0001 Å\) "
                                          r"\(float64 tolerances\): FAILED\n  forces \(eV/Å\): "
                                          r"max error .* \(at atom \d+, axis [xyz]\), "
                                          r"tolerance 1e-07: FAILED") as failed:
        check_forces_finite_difference(flipped, STRUCTURE, atoms=[0, 5])
    worst = failed.value.report.comparisons[0]
    assert worst.max_error > 0.1 and not failed.value.report.passed


def test_an_energy_that_depends_on_orientation_fails_the_rotation_check():
    tilted = broken(lambda s, p: dataclasses.replace(
        p, energy=p.energy + 1e-3 * float(s.positions[:, 0].sum())))
    with pytest.raises(CheckFailed, match=r"energy per atom \(eV/atom\): max error .*"
                                          r"tolerance 1e-08: FAILED"):
        check_rotation_equivariance(tilted, STRUCTURE)


def test_forces_and_stress_fixed_in_the_lab_frame_fail_the_rotation_check():
    fixed = emt([STRUCTURE])[0]
    lab = broken(lambda s, p: dataclasses.replace(p, forces=fixed.forces, stress=fixed.stress))
    with pytest.raises(CheckFailed) as failed:
        check_rotation_equivariance(lab, STRUCTURE)
    verdicts = {c.quantity: c.passed for c in failed.value.report.comparisons}
    assert verdicts == {"energy per atom (eV/atom)": True, "forces (eV/Å)": False,
                        "stress (eV/Å³)": False}


def test_a_wrong_stress_fails_the_finite_strain_check():
    doubled = broken(lambda s, p: dataclasses.replace(p, stress=2 * p.stress))
    with pytest.raises(CheckFailed, match=r"stress \(eV/Å³\): max error .* \(at component "
                                          r"[xyz]{2}\), tolerance 1e-08: FAILED"):
        check_stress_finite_strain(doubled, STRUCTURE)


def test_stress_needs_a_cell_with_a_volume():
    molecule = small_molecule()
    with pytest.raises(ValueError, match="needs a cell with a volume"):
        check_stress_finite_strain(lambda s: [emt_on(x, molecule) for x in s],
                                   to_structure(molecule))


def test_answers_that_depend_on_the_batch_fail_the_batch_check():
    def batch_dependent(structures):
        return [dataclasses.replace(p, energy=p.energy + 1e-3 * len(structures))
                for p in emt(structures)]
    with pytest.raises(CheckFailed, match=r"batch == single .*FAILED\n  energy per atom .* "
                                          r"\(at item \d\), tolerance 1e-08: FAILED"):
        check_batch_equals_single(batch_dependent, [STRUCTURE, STRUCTURE])
    with pytest.raises(CheckFailed, match="1 predictions for 2 items"):
        check_batch_equals_single(lambda items: emt(items[:1]), [STRUCTURE, STRUCTURE])


def test_float32_tolerances_are_looser_and_non_finite_answers_fail():
    slightly_off = broken(lambda s, p: dataclasses.replace(p, forces=p.forces + 1e-5))
    with pytest.raises(CheckFailed):
        check_rotation_equivariance(slightly_off, STRUCTURE, rotations=1)
    assert tolerance("float32").forces > 1e-5
    # forces offset by a constant still rotate wrongly, but by less than float32 allows
    assert check_rotation_equivariance(slightly_off, STRUCTURE, dtype="float32").passed
    nan = broken(lambda s, p: dataclasses.replace(p, forces=np.full_like(p.forces, np.nan)))
    with pytest.raises(CheckFailed, match=r"forces \(eV/Å\): max error inf"):
        check_rotation_equivariance(nan, STRUCTURE)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match=r"no tolerance for dtype 'float16'; known: "):
        check_rotation_equivariance(emt, STRUCTURE, dtype="float16")
