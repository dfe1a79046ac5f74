"""Properties of our UMA that need no oracle: invariance under rotations,
translations and permutations; forces and stress as derivatives of the energy;
smoothness at the cutoff; batching."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111, molecule

from umadrive.model import System
from umadrive.structure import Structure
from umadrive.testing import tolerance

TOL = tolerance("float64")


def _system(atoms: Atoms, task: str, charge: int = 0, spin: int = 0) -> System:
    return System(numbers=atoms.numbers.copy(),
                  structure=Structure(positions=atoms.positions.copy(),
                                      cell=atoms.cell.array.copy(), pbc=atoms.pbc.copy()),
                  task=task, charge=charge, spin=spin)


def _moved(system: System, positions: np.ndarray, cell: np.ndarray | None = None) -> System:
    cell = system.structure.cell if cell is None else cell
    return System(numbers=system.numbers, structure=Structure(positions, cell, system.structure.pbc),
                  task=system.task, charge=system.charge, spin=system.spin)


def _molecule() -> System:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    return _system(atoms, "omol", charge=-1, spin=2)


def _crystal() -> System:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.set_chemical_symbols(["Cu", "Ni", "Cu", "Au"])
    atoms.set_cell(atoms.cell.array @ [[1.0, 0.05, 0.0], [0.12, 0.96, 0.0], [0.0, -0.1, 1.03]],
                   scale_atoms=True)
    atoms.rattle(0.05, seed=2)
    return _system(atoms, "omat")


def _slab() -> System:
    atoms = fcc111("Pt", size=(2, 2, 2), vacuum=4.0)
    atoms.rattle(0.05, seed=3)
    atoms.pbc = (True, True, False)
    return _system(atoms, "oc20")


def _random_rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.mark.parametrize("name", ["s1p1", "m1p1"])
@pytest.mark.parametrize("make", [_molecule, _crystal, _slab], ids=["molecule", "crystal", "slab"])
def test_rotations_translations_permutations(name, make, uma_unit):
    unit = uma_unit(name)
    system = make()
    base = unit.predict([system])[0]
    n = len(system.numbers)
    rotation = _random_rotation(n)
    shift = np.array([0.37, -1.21, 2.4])
    order = np.random.default_rng(n).permutation(n)

    rotated = unit.predict([_moved(system, system.structure.positions @ rotation.T + shift,
                                   system.structure.cell @ rotation.T)])[0]
    assert abs(rotated.energy - base.energy) / n <= TOL.energy_per_atom
    np.testing.assert_allclose(rotated.forces, base.forces @ rotation.T, atol=TOL.forces)
    if base.stress is not None:
        np.testing.assert_allclose(rotated.stress, rotation @ base.stress @ rotation.T,
                                   atol=TOL.stress)

    permuted_system = System(numbers=system.numbers[order],
                             structure=Structure(system.structure.positions[order],
                                                 system.structure.cell, system.structure.pbc),
                             task=system.task, charge=system.charge, spin=system.spin)
    permuted = unit.predict([permuted_system])[0]
    assert abs(permuted.energy - base.energy) / n <= TOL.energy_per_atom
    np.testing.assert_allclose(permuted.forces, base.forces[order], atol=TOL.forces)


def _with_awkward_edges() -> System:
    """Bonds exactly along +y (Euler-angle pole) and at 45 degrees to it (frame switch)."""
    atoms = Atoms("CNOH", positions=[[0, 0, 0], [0, 1.3, 0], [0.9, 2.2, 0.0], [0.1, -0.6, 0.8]])
    return _system(atoms, "omol", spin=2)


@pytest.mark.parametrize("make", [_crystal, _with_awkward_edges], ids=["crystal", "awkward_edges"])
def test_forces_are_minus_the_energy_gradient(make, uma_unit):
    unit = uma_unit("s1p1")
    system = make()
    forces = unit.predict([system])[0].forces
    h = 1e-4  # truncation error ~ h**2 * E''' ~ 1e-9 eV/Å here
    positions = system.structure.positions
    atoms = range(min(3, len(positions)))
    numeric = np.zeros_like(positions[:len(atoms)])
    for atom in atoms:
        for axis in range(3):
            energies = []
            for sign in (1, -1):
                moved = positions.copy()
                moved[atom, axis] += sign * h
                energies.append(unit.predict([_moved(system, moved)])[0].energy)
            numeric[atom, axis] = -(energies[0] - energies[1]) / (2 * h)
    np.testing.assert_allclose(forces[:len(atoms)], numeric, rtol=0, atol=TOL.forces)


@pytest.mark.parametrize("make", [_crystal, _slab], ids=["crystal", "slab"])
def test_stress_is_the_strain_derivative(make, uma_unit):
    unit = uma_unit("s1p1")
    system = make()
    stress = unit.predict([system])[0].stress
    volume = abs(np.linalg.det(system.structure.cell))
    h = 1e-5
    numeric = np.zeros((3, 3))
    for a in range(3):
        for b in range(a, 3):
            strain = np.zeros((3, 3))
            strain[a, b] = strain[b, a] = 1.0
            energies = []
            for sign in (1, -1):
                deformation = np.eye(3) + sign * h * strain
                energies.append(unit.predict([_moved(system, system.structure.positions @ deformation,
                                                     system.structure.cell @ deformation)])[0].energy)
            derivative = (energies[0] - energies[1]) / (2 * h)
            numeric[a, b] = numeric[b, a] = derivative / volume / (1 if a == b else 2)
    np.testing.assert_allclose(stress, numeric, rtol=0, atol=TOL.stress)


def test_energy_is_smooth_where_a_neighbour_crosses_the_cutoff(uma_unit):
    unit = uma_unit("s1p1")
    cutoff = unit.model.cutoff

    def dimer(distance: float):
        atoms = Atoms("CO", positions=[[0, 0, 0], [0.3, 0.2, 0.0]])
        direction = np.array([0.3, 0.2, 0.0]) / np.linalg.norm([0.3, 0.2, 0.0])
        atoms.positions[1] = direction * distance
        return unit.predict([_system(atoms, "omol", spin=1)])[0]

    inside, outside = dimer(cutoff - 1e-3), dimer(cutoff + 1e-3)
    assert not np.any(outside.forces)  # no edge at all beyond the cutoff
    assert abs(inside.energy - outside.energy) < 1e-8
    assert np.abs(inside.forces).max() < 1e-6
    # ... while the pair does interact well inside the cutoff
    assert abs(dimer(cutoff - 1.0).energy - outside.energy) > 1e-4


def test_a_batch_of_different_systems_equals_one_by_one(uma_unit):
    unit = uma_unit("m1p1")
    systems = [_crystal(), _molecule(), _slab(), _with_awkward_edges()]
    together = unit.predict(systems)
    for system, batched in zip(systems, together):
        alone = unit.predict([system])[0]
        assert abs(batched.energy - alone.energy) <= 1e-10
        np.testing.assert_allclose(batched.forces, alone.forces, atol=1e-10)
        if alone.stress is None:
            assert batched.stress is None
        else:
            np.testing.assert_allclose(batched.stress, alone.stress, atol=1e-12)


def test_forces_can_be_trained_on(uma_unit, uma_checkpoint_path):
    """create_graph=True: d(sum F**2)/d(weight) equals its finite difference."""
    import torch

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
