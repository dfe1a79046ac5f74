"""Properties of our UMA that need no oracle, in float32 and float64 (tolerances
from :mod:`umadrive.testing`): invariance under rotations, translations and
permutations; forces and stress as derivatives of the energy; smoothness at the
cutoff; batching; merged experts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule

from umadrive.model import InferenceSettings, PredictUnit, System
from umadrive.testing import (check_batch_equals_single, check_forces_finite_difference,
                              check_merged_equals_unmerged, check_rotation_equivariance,
                              check_stress_finite_strain, structure_predictor, tolerance)

from tests.model.helpers import DTYPES, reference_cases, system_of

dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])


def _molecule() -> System:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    return system_of(atoms, "omol", charge=-1, spin=2)


def _crystal() -> System:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.set_chemical_symbols(["Cu", "Ni", "Cu", "Au"])
    atoms.set_cell(atoms.cell.array @ [[1.0, 0.05, 0.0], [0.12, 0.96, 0.0], [0.0, -0.1, 1.03]],
                   scale_atoms=True)
    atoms.rattle(0.05, seed=2)
    return system_of(atoms, "omat")


def _slab() -> System:
    atoms = fcc111("Pt", size=(2, 2, 2), vacuum=4.0)
    atoms.rattle(0.05, seed=3)
    atoms.pbc = (True, True, False)
    return system_of(atoms, "oc20")


def _moved(system: System, positions: np.ndarray) -> System:
    return dataclasses.replace(system, structure=dataclasses.replace(system.structure,
                                                                     positions=positions))


@dtypes
@pytest.mark.parametrize("name", ["s1p1", "m1p1"])
@pytest.mark.parametrize("make", [_molecule, _crystal, _slab], ids=["molecule", "crystal", "slab"])
def test_rotations(name, make, dtype, uma_unit):
    system = make()
    check_rotation_equivariance(structure_predictor(uma_unit(name, dtype), system),
                                system.structure, dtype=dtype, seed=len(system.numbers))


@dtypes
@pytest.mark.parametrize("make", [_molecule, _crystal, _slab], ids=["molecule", "crystal", "slab"])
def test_translations_and_permutations(make, dtype, uma_unit):
    unit = uma_unit("s1p1", dtype)
    tol = tolerance(dtype)
    system = make()
    base = unit.predict([system])[0]
    n = len(system.numbers)
    shifted = unit.predict([_moved(system, system.structure.positions + [0.37, -1.21, 2.4])])[0]
    assert abs(shifted.energy - base.energy) / n <= tol.energy_per_atom
    np.testing.assert_allclose(shifted.forces, base.forces, rtol=0, atol=tol.forces)

    order = np.random.default_rng(n).permutation(n)
    permuted = unit.predict([dataclasses.replace(
        system, numbers=system.numbers[order],
        structure=dataclasses.replace(system.structure,
                                      positions=system.structure.positions[order]))])[0]
    assert abs(permuted.energy - base.energy) / n <= tol.energy_per_atom
    np.testing.assert_allclose(permuted.forces, base.forces[order], rtol=0, atol=tol.forces)


def _with_awkward_edges() -> System:
    """Bonds exactly along +y (Euler-angle pole) and at 45 degrees to it (frame switch)."""
    atoms = Atoms("CNOH", positions=[[0, 0, 0], [0, 1.3, 0], [0.9, 2.2, 0.0], [0.1, -0.6, 0.8]])
    return system_of(atoms, "omol", spin=2)


@dtypes
@pytest.mark.parametrize("make", [_crystal, _with_awkward_edges], ids=["crystal", "awkward_edges"])
def test_forces_are_minus_the_energy_gradient(make, dtype, uma_unit):
    system = make()
    check_forces_finite_difference(structure_predictor(uma_unit("s1p1", dtype), system),
                                   system.structure, dtype=dtype, atoms=range(3))


@dtypes
@pytest.mark.parametrize("make", [_crystal, _slab], ids=["crystal", "slab"])
def test_stress_is_the_strain_derivative(make, dtype, uma_unit):
    system = make()
    check_stress_finite_strain(structure_predictor(uma_unit("s1p1", dtype), system),
                               system.structure, dtype=dtype)


@dtypes
def test_energy_is_smooth_where_a_neighbour_crosses_the_cutoff(dtype, uma_unit):
    unit = uma_unit("s1p1", dtype)
    tol = tolerance(dtype)
    cutoff = unit.model.cutoff

    def dimer(distance: float):
        atoms = Atoms("CO", positions=[[0, 0, 0], [0.3, 0.2, 0.0]])
        direction = np.array([0.3, 0.2, 0.0]) / np.linalg.norm([0.3, 0.2, 0.0])
        atoms.positions[1] = direction * distance
        return unit.predict([system_of(atoms, "omol", spin=1)])[0]

    inside, outside = dimer(cutoff - 1e-3), dimer(cutoff + 1e-3)
    assert not np.any(outside.forces)  # no edge at all beyond the cutoff
    assert abs(inside.energy - outside.energy) / 2 <= tol.energy_per_atom
    assert np.abs(inside.forces).max() <= tol.forces
    # ... while the pair does interact well inside the cutoff (by far more than allowed above)
    assert abs(dimer(cutoff - 1.0).energy - outside.energy) / 2 > 10 * tol.energy_per_atom


@dtypes
def test_a_batch_of_different_systems_equals_one_by_one(dtype, uma_unit):
    systems = [_crystal(), _molecule(), _slab(), _with_awkward_edges()]
    check_batch_equals_single(uma_unit("m1p1", dtype).predict, systems, dtype=dtype)


@dtypes
def test_merged_experts_answer_as_routed_ones(dtype, uma_unit):
    unit = PredictUnit(uma_unit("s1p1", dtype).model, device=torch.device("cpu"),
                       settings=InferenceSettings(base_precision_dtype=dtype, merge_mole=True))
    systems = [system for _, system, _ in reference_cases("s1p1")] + [_crystal(), _slab()]
    check_merged_equals_unmerged(unit, systems)
    assert unit.stats.merges == len(systems)


def test_forces_can_be_trained_on(uma_unit, uma_checkpoint_path):
    """create_graph=True: d(sum F**2)/d(weight) equals its finite difference."""
    from umadrive.model.checkpoint import load_checkpoint
    from umadrive.model.graph import radius_graph
    from umadrive.model.uma import UMA

    model = UMA.from_checkpoint(load_checkpoint(uma_checkpoint_path("s1p1")), dtype=torch.float64)
    atoms = uma_unit("s1p1").batch([_with_awkward_edges()])
    graph = radius_graph(atoms.positions, atoms.cell, atoms.pbc, atoms.batch,
                         cutoff=model.cutoff, max_neighbors=model.max_neighbors)
    weight = model.backbone.blocks[0].edge_wise.so2_conv_1.so2_m_conv[0].fc.weights

    def loss() -> torch.Tensor:
        return model(atoms, graph, stress=False, create_graph=True).forces.pow(2).sum()

    (gradient,) = torch.autograd.grad(loss(), [weight])
    index, h = (1, 2, 3), 1e-5
    with torch.no_grad():
        weight[index] += h
    up = float(loss().detach())
    with torch.no_grad():
        weight[index] -= 2 * h
    down = float(loss().detach())
    assert abs(float(gradient[index]) - (up - down) / (2 * h)) < 1e-7
    assert float(gradient.abs().max()) > 0
