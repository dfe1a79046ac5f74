"""An ASE calculator around a :class:`~umadrive.model.predictor.PredictUnit`:
the easy path for scripts (for MD, drive the predict unit or ``umadrive serve``).

Charge and spin come from ``atoms.info``: ``charge`` (default 0, within
``CHARGE_RANGE``) and ``spin``, the multiplicity 2S+1 (default:
:func:`default_spin`, within ``SPIN_RANGE``); non-integers raise TypeError.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from umadrive.model import pretrained_mlip
from umadrive.model.predictor import CHARGE_RANGE, SPIN_RANGE, PredictUnit, System
from umadrive.model.settings import InferenceSettings
from umadrive.structure import Structure

MOLECULAR_TASK = "omol"


def default_spin(task: str) -> int:
    """The spin multiplicity used when none is given: 1 (singlet) for the
    molecular task, 0 (unset) for the others, as fairchem's calculator does."""
    return 1 if task == MOLECULAR_TASK else 0


def _integer_info(atoms: Atoms, key: str, default: int, limits: tuple[int, int]) -> int:
    value = atoms.info.get(key, default)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"atoms.info[{key!r}] must be an integer, got {value!r} "
                        f"({type(value).__name__})")
    low, high = limits
    if not low <= int(value) <= high:
        raise ValueError(f"atoms.info[{key!r}]={value} is outside [{low}, {high}]")
    return int(value)


class UMACalculator(Calculator):
    """ASE calculator: energy and free_energy (eV), forces (eV/Å), stress (eV/Å³, Voigt).

    predict_unit: from :func:`umadrive.model.get_predict_unit`.
    task_name: one of ``predict_unit.datasets`` ("omat", "omol", "oc20", ...).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, predict_unit: PredictUnit, task_name: str = "omat", **kwargs) -> None:
        super().__init__(**kwargs)
        if task_name not in predict_unit.datasets:
            raise ValueError(f"task_name={task_name!r} is not a task of this model; "
                             f"choose one of {list(predict_unit.datasets)}")
        self.predict_unit = predict_unit
        self.task_name = task_name

    def system(self, atoms: Atoms) -> System:
        """The predict unit's view of ``atoms`` (validated)."""
        if len(atoms) == 0:
            raise ValueError("atoms is empty: UMACalculator needs at least one atom")
        pbc = np.asarray(atoms.pbc, dtype=bool)
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        zero_rows = [axis for axis in range(3) if pbc[axis] and not np.any(cell[axis])]
        if zero_rows:
            raise ValueError(f"atoms is periodic along axes {zero_rows} but its cell vectors "
                             f"there are zero; set a cell or make those axes non-periodic")
        return System(
            numbers=np.asarray(atoms.numbers),
            structure=Structure.from_atoms(atoms),
            task=self.task_name,
            charge=_integer_info(atoms, "charge", 0, CHARGE_RANGE),
            spin=_integer_info(atoms, "spin", default_spin(self.task_name), SPIN_RANGE),
        )

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """ASE's changes, plus "info" when charge or spin in ``atoms.info`` changed."""
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and any(atoms.info.get(key) != self.atoms.info.get(key)
                                          for key in ("charge", "spin")):
            changes.append("info")
        return changes

    def calculate(self, atoms: Atoms | None = None, properties=("energy",),
                  system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        prediction = self.predict_unit.predict([self.system(self.atoms)])[0]
        self.results = {"energy": prediction.energy, "free_energy": prediction.energy,
                        "forces": prediction.forces}
        if prediction.stress is not None:
            s = prediction.stress
            self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        elif "stress" in properties:
            raise PropertyNotImplementedError(
                "stress needs a cell with a non-zero volume; this structure has none")


class FAIRChemCalculator(UMACalculator):
    """fairchem's calculator signature on :class:`UMACalculator`:
    ``FAIRChemCalculator(predictor, task_name="omat")``.

    task_name: None picks the model's only task (an error when it has several).
    seed: accepted for fairchem's signature and ignored (fairchem deprecates it).
    """

    def __init__(self, predict_unit: PredictUnit, task_name: str | None = None,
                 seed: int | None = None, **kwargs) -> None:
        del seed
        if task_name is None:
            if len(predict_unit.datasets) != 1:
                raise ValueError(f"task_name is needed: this model has the tasks "
                                 f"{list(predict_unit.datasets)}; pass task_name=one of them")
            task_name = predict_unit.datasets[0]
        super().__init__(predict_unit, task_name=getattr(task_name, "value", task_name),
                         **kwargs)

    @property
    def predictor(self) -> PredictUnit:
        """fairchem's name for :attr:`predict_unit`."""
        return self.predict_unit

    @classmethod
    def from_model_checkpoint(cls, name_or_path: str, task_name: str | None = None,
                              inference_settings: InferenceSettings | str = "default",
                              overrides: dict | None = None, device: str | None = None,
                              seed: int = 41, workers: int = 1) -> "FAIRChemCalculator":
        """Load a model name or checkpoint path (see
        :func:`umadrive.model.pretrained_mlip.get_predict_unit`) and wrap it."""
        unit = pretrained_mlip.get_predict_unit(name_or_path, inference_settings, overrides,
                                                device, workers=workers, seed=seed)
        return cls(unit, task_name=task_name)
