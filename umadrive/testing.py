"""Helpers for checking a umadrive setup: shipped so users can run the same
checks on their own machines and models.

``TOLERANCES`` is the one table of numerical tolerances that every umadrive test
uses; pick the row for the floating-point precision a computation ran in.

The checks work for anything that answers a batch of structures with one
:class:`~umadrive.structure.Prediction` each (a :data:`Predict`): a driver
backend's ``compute``, or a predict unit bound to one system with
:func:`structure_predictor`. Each check compares in the precision ``dtype`` the
predictions were made in, returns a :class:`CheckReport` (the largest error of
each quantity and its tolerance) when every error is within its tolerance, and
raises :class:`CheckFailed` with that report otherwise:

* :func:`check_rotation_equivariance`: energy invariant, forces and stress
  rotating with the structure;
* :func:`check_forces_finite_difference`: forces = -dE/dx (central differences);
* :func:`check_stress_finite_strain`: stress = (1/V) dE/dε (central differences);
* :func:`check_batch_equals_single`: a batch answers as its members one by one;
* :func:`check_merged_equals_unmerged`: a predict unit with ``merge_mole``
  answers as the same model with routed experts.

"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

import numpy as np

from umadrive.structure import Prediction, Structure

if TYPE_CHECKING:
    from umadrive.model.predictor import PredictUnit, System


@dataclass(frozen=True)
class Tolerance:
    """Absolute tolerances for one precision, and the finite-difference steps
    that reach them in that precision.

    energy_per_atom: eV/atom.
    forces: eV/Å, per component.
    stress: eV/Å³, per component.
    displacement: Å, the step of finite-difference forces.
    strain: dimensionless, the step of finite-strain stress.
    """

    energy_per_atom: float
    forces: float
    stress: float
    displacement: float = 1e-4
    strain: float = 1e-5


TOLERANCES: dict[str, Tolerance] = {
    # float64 steps: truncation error ~ step**2 * E''' stays below 1e-9.
    "float64": Tolerance(energy_per_atom=1e-8, forces=1e-7, stress=1e-8),
    # float32 energies are noisy by ~1e-6 eV, so steps are larger; not much
    # larger, since UMA's max_neighbors cap makes the energy jump where a
    # neighbour's rank changes (a few 1e-3 Å away in small fcc crystals, closer
    # in larger ones: there only float64 finite differences pass).
    "float32": Tolerance(energy_per_atom=1e-4, forces=1e-3, stress=1e-4,
                         displacement=1.5e-3, strain=5e-4),
    # float64 values compared with what an engine printed with 8 decimals (ASE's
    # extxyz writer, used by i-PI's trajectories): 5e-9 Å position rounding
    # moves forces by up to ~1e-7 eV/Å.
    "printed": Tolerance(energy_per_atom=1e-8, forces=1e-6, stress=1e-8),
}


# Relative agreement to expect between quantities converted with an MD engine's own
# unit constants (LAMMPS's nktv2p, ftm2v, its kcal/mol; i-PI's Hartree) and the same
# quantities converted with ase.units: those constants differ in the 7th-8th digit.
ENGINE_CONSTANTS_RTOL = 1e-6


def tolerance(dtype: object) -> Tolerance:
    """The tolerance row for ``dtype`` (a torch or numpy dtype, or its name, or
    ``"printed"``)."""
    return TOLERANCES[_row_name(dtype)]


def _row_name(dtype: object) -> str:
    name = str(dtype).rsplit(".", 1)[-1]
    if name not in TOLERANCES:
        raise ValueError(f"no tolerance for dtype {dtype!r}; known: {sorted(TOLERANCES)}")
    return name


Predict = Callable[[Sequence[Structure]], list[Prediction]]
"""Structures in, one prediction each out (eV, eV/Å, eV/Å³), e.g. ``Backend.compute``."""

Item = TypeVar("Item")


@dataclass(frozen=True)
class Comparison:
    """The largest error of one quantity. quantity: its name and unit. where: the
    case, atom and component of the largest error."""

    quantity: str
    max_error: float
    tolerance: float
    where: str

    @property
    def passed(self) -> bool:
        return bool(self.max_error <= self.tolerance)

    def __str__(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (f"{self.quantity}: max error {self.max_error:.3g} (at {self.where}), "
                f"tolerance {self.tolerance:.3g}: {verdict}")


@dataclass(frozen=True)
class CheckReport:
    """What one check measured. check: its name; dtype: the tolerance row used."""

    check: str
    dtype: str
    comparisons: tuple[Comparison, ...]

    @property
    def passed(self) -> bool:
        return all(comparison.passed for comparison in self.comparisons)

    def __str__(self) -> str:
        lines = [f"{self.check} ({self.dtype} tolerances): "
                 f"{'passed' if self.passed else 'FAILED'}"]
        lines += [f"  {comparison}" for comparison in self.comparisons]
        return "\n".join(lines)


class CheckFailed(AssertionError):
    """A check found an error above its tolerance; ``report`` has the numbers."""

    def __init__(self, report: CheckReport) -> None:
        super().__init__(str(report))
        self.report = report


def structure_predictor(unit: "PredictUnit", system: "System") -> Predict:
    """``unit`` as a :data:`Predict` for structures of ``system``'s atoms, task,
    charge and spin (the structures replace ``system.structure``)."""
    def predict(structures: Sequence[Structure]) -> list[Prediction]:
        return unit.predict([dataclasses.replace(system, structure=structure)
                             for structure in structures])
    return predict


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random proper rotation matrix (3, 3)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def check_rotation_equivariance(predict: Predict, structure: Structure, *,
                                dtype: object = "float64", rotations: int = 3,
                                seed: int = 0) -> CheckReport:
    """Rotate ``structure`` (positions and cell) by ``rotations`` random rotations
    R: the energy must stay, forces become F Rᵀ and stress R σ Rᵀ."""
    tol = tolerance(dtype)
    rng = np.random.default_rng(seed)
    base = _one(predict, structure)
    got, want, cases = [], [], []
    for index in range(rotations):
        rotation = random_rotation(rng)
        rotated = Structure(positions=structure.positions @ rotation.T,
                            cell=structure.cell @ rotation.T, pbc=structure.pbc)
        stress = None if base.stress is None else rotation @ base.stress @ rotation.T
        got.append(_one(predict, rotated))
        want.append(Prediction(energy=base.energy, forces=base.forces @ rotation.T,
                               stress=stress))
        cases.append(f"rotation {index}")
    return _finish("rotation equivariance", dtype,
                   _compare_predictions(got, want, cases, tol))


def check_forces_finite_difference(predict: Predict, structure: Structure, *,
                                   dtype: object = "float64",
                                   atoms: Sequence[int] | None = None,
                                   step: float | None = None) -> CheckReport:
    """Forces of ``atoms`` (indices; default all) against -dE/dx by central
    differences with ``step`` Å (default: the tolerance row's ``displacement``).
    Costs six single-structure calls per atom. In float32 only small systems
    pass: the energy's rounding noise (~1e-6 eV) needs steps of ~1e-3 Å, and in
    dense systems UMA's energy jumps within such a step where its
    ``max_neighbors`` cap changes which neighbours count."""
    tol = tolerance(dtype)
    step = tol.displacement if step is None else step
    # Positions as the predictor holds them, so that the step divided by is the
    # step taken (in float32 a position of 10 Å moves in steps of ~1e-6 Å).
    precision = np.float32 if _row_name(dtype) == "float32" else np.float64
    positions = np.asarray(structure.positions).astype(precision).astype(np.float64)
    indices = list(range(len(positions)) if atoms is None else atoms)
    forces = _one(predict, dataclasses.replace(structure, positions=positions)).forces[indices]
    numeric = np.zeros_like(forces)
    for row, atom in enumerate(indices):
        for axis in range(3):
            energies, moved_to = [], []
            for sign in (1, -1):
                moved = positions.copy()
                moved[atom, axis] = precision(moved[atom, axis] + sign * step)
                moved_to.append(moved[atom, axis])
                energies.append(_one(predict, dataclasses.replace(structure,
                                                                  positions=moved)).energy)
            numeric[row, axis] = -(energies[0] - energies[1]) / (moved_to[0] - moved_to[1])
    comparison = _compare_arrays("forces (eV/Å)", forces, numeric, tol.forces,
                                 lambda i: f"atom {indices[i[0]]}, axis {'xyz'[i[1]]}")
    return _finish(f"finite-difference forces (step {step:g} Å)", dtype, [comparison])


def check_stress_finite_strain(predict: Predict, structure: Structure, *,
                               dtype: object = "float64",
                               step: float | None = None) -> CheckReport:
    """Stress against (1/V) dE/dε by central differences of symmetric strains ε
    of ``step`` (default: the tolerance row's ``strain``) applied to positions and
    cell; V = |det cell|, so a slab's stress is per volume of its cell, vacuum
    included. In float32, as for forces, only small systems pass."""
    volume = abs(float(np.linalg.det(structure.cell)))
    if volume == 0:
        raise ValueError("check_stress_finite_strain needs a cell with a volume (three "
                         f"non-zero lattice vectors), got cell={structure.cell.tolist()}")
    tol = tolerance(dtype)
    step = tol.strain if step is None else step
    stress = _one(predict, structure).stress
    if stress is None:
        raise ValueError("the predictor returned no stress for this structure; "
                         "check_stress_finite_strain needs one")
    numeric = np.zeros((3, 3))
    for a in range(3):
        for b in range(a, 3):
            strain = np.zeros((3, 3))
            strain[a, b] = strain[b, a] = 1.0 if a == b else 0.5
            energies = []
            for sign in (1, -1):
                deformation = np.eye(3) + sign * step * strain
                energies.append(_one(predict, Structure(
                    positions=structure.positions @ deformation,
                    cell=structure.cell @ deformation, pbc=structure.pbc)).energy)
            numeric[a, b] = numeric[b, a] = (energies[0] - energies[1]) / (2 * step) / volume
    comparison = _compare_arrays("stress (eV/Å³)", stress, numeric, tol.stress,
                                 lambda i: f"component {'xyz'[i[0]]}{'xyz'[i[1]]}")
    return _finish(f"finite-strain stress (step {step:g})", dtype, [comparison])


def check_batch_equals_single(predict: Callable[[Sequence[Item]], list[Prediction]],
                              items: Sequence[Item], *,
                              dtype: object = "float64") -> CheckReport:
    """``predict(items)`` against ``predict([item])`` for each item. Items: what
    ``predict`` takes (structures for a backend, systems for a predict unit's
    ``predict``, which may mix systems in one batch)."""
    batched = predict(items)
    if len(batched) != len(items):
        raise CheckFailed(CheckReport("batch == single", _row_name(dtype), (Comparison(
            "predictions per item", abs(len(batched) - len(items)), 0,
            f"{len(batched)} predictions for {len(items)} items"),)))
    single = [predict([item])[0] for item in items]
    return _finish("batch == single", dtype, _compare_predictions(
        batched, single, [f"item {index}" for index in range(len(items))], tolerance(dtype)))


def check_merged_equals_unmerged(unit: "PredictUnit",
                                 systems: Sequence["System"]) -> CheckReport:
    """Each system alone on ``unit`` (which has ``merge_mole`` on, so it runs on
    merged experts) against a unit of the same model and settings with
    ``merge_mole`` off (routed experts; default graph generator and compile
    backend). Compared in the unit's precision."""
    from umadrive.model.predictor import PredictUnit

    if not unit.settings.merge_mole:
        raise ValueError("check_merged_equals_unmerged needs a unit with merge_mole=True; "
                         "build it with InferenceSettings(merge_mole=True)")
    routed = PredictUnit(unit.model, device=unit.device,
                         settings=dataclasses.replace(unit.settings, merge_mole=False))
    merged, unmerged = [], []
    for system in systems:
        routed_calls = unit.stats.routed_calls
        merged.append(unit.predict([system])[0])
        if unit.stats.routed_calls != routed_calls:
            raise RuntimeError("the merged unit routed a single-system call; its merged "
                               "experts were not used")
        unmerged.append(routed.predict([system])[0])
    return _finish("merged == unmerged", unit.dtype, _compare_predictions(
        merged, unmerged, [f"system {index}" for index in range(len(systems))],
        tolerance(unit.dtype)))


def _one(predict: Predict, structure: Structure) -> Prediction:
    return predict([structure])[0]


def _finish(check: str, dtype: object, comparisons: list[Comparison]) -> CheckReport:
    report = CheckReport(check, _row_name(dtype), tuple(comparisons))
    if not report.passed:
        raise CheckFailed(report)
    return report


def _compare_arrays(quantity: str, got: np.ndarray, want: np.ndarray, limit: float,
                    where: Callable[[tuple[int, ...]], str]) -> Comparison:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return Comparison(quantity, float("inf"), limit,
                          f"shape {got.shape}, expected {want.shape}")
    if got.size == 0:
        return Comparison(quantity, 0.0, limit, "no values")
    error = np.nan_to_num(np.abs(got - want), nan=np.inf)
    worst = np.unravel_index(np.argmax(error), error.shape)
    return Comparison(quantity, float(error[worst]), limit, where(tuple(int(i) for i in worst)))


def _compare_predictions(got: Sequence[Prediction], want: Sequence[Prediction],
                         cases: Sequence[str], tol: Tolerance) -> list[Comparison]:
    """The largest energy-per-atom, force and stress error over all cases."""
    found: dict[str, list[Comparison]] = {"energy": [], "forces": [], "stress": []}
    for case, a, b in zip(cases, got, want):
        atoms = max(1, len(b.forces))
        found["energy"].append(_compare_arrays(
            "energy per atom (eV/atom)", np.array(a.energy) / atoms, np.array(b.energy) / atoms,
            tol.energy_per_atom, lambda _: case))
        found["forces"].append(_compare_arrays(
            "forces (eV/Å)", a.forces, b.forces, tol.forces,
            lambda i: f"{case}, atom {i[0]}, axis {'xyz'[i[1]]}" if len(i) == 2 else case))
        if a.stress is not None or b.stress is not None:
            if a.stress is None or b.stress is None:
                found["stress"].append(Comparison("stress (eV/Å³)", float("inf"), tol.stress,
                                                  f"{case}: stress on one side only"))
            else:
                found["stress"].append(_compare_arrays(
                    "stress (eV/Å³)", a.stress, b.stress, tol.stress,
                    lambda i: f"{case}, component {'xyz'[i[0]]}{'xyz'[i[1]]}"))
    return [max(rows, key=lambda c: c.max_error / c.tolerance)
            for rows in found.values() if rows]
