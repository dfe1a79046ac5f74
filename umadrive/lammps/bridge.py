"""The LAMMPS bridge: LAMMPS integrates, umadrive's model gives the forces.

A LAMMPS input script declares ``fix umadrive all external pf/callback 1 1``; at
every force evaluation LAMMPS calls :meth:`LammpsBridge.callback`, which sends the
atoms (tag order, Å, cell rows) to a model through ``compute`` (in
``umadrive lammps``: the i-PI server side talking to a running ``umadrive serve``)
and sets the fix's per-atom forces, global energy and global virial, converted to
the script's units. With the energy and virial set, ``thermo pe press`` and
``fix npt`` see the model (fix external contributes both by default).

A callback cannot stop LAMMPS by raising (ctypes would print and ignore the
exception, and LAMMPS would go on with zero forces), so every failure inside it
goes to ``on_failure``, which must not return: it ends the process.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

from umadrive.lammps.errors import LammpsInputError
from umadrive.lammps.system import LammpsSystem, lammps_cell
from umadrive.lammps.units import LammpsUnits
from umadrive.structure import Prediction, Structure, virial as stress_virial

# LAMMPS orders a global virial xx, yy, zz, xy, xz, yz.
_VIRIAL_VOIGT = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))


class LammpsBridge:
    """Answers one LAMMPS ``fix external pf/callback`` from ``compute``.

    lmp: a ``lammps.lammps`` instance whose script declared the fix.
    fix_id: the fix's ID.
    system: the atoms when the bridge attached (tag order; the request's order
        and composition must stay the same for the whole run).
    units: the script's unit style.
    compute: Structure (Å, eV) -> Prediction; raises on failure.
    on_failure: called with (timestep, error) when a step cannot be served;
        never returns.
    allow_no_stress: for a periodic box the model answers without a stress,
        give LAMMPS a zero virial (with a warning on stderr) instead of stopping.
    """

    def __init__(
        self,
        lmp: Any,
        *,
        fix_id: str,
        system: LammpsSystem,
        units: LammpsUnits,
        compute: Callable[[Structure], Prediction],
        on_failure: Callable[[int, BaseException], NoReturn],
        allow_no_stress: bool = False,
    ) -> None:
        if not lmp.has_id("fix", fix_id):
            raise LammpsInputError(
                f"LAMMPS has no fix with ID {fix_id!r}; declare "
                f"`fix {fix_id} all external pf/callback 1 1` before the first run"
            )
        self._lmp = lmp
        self._fix_id = fix_id
        self._system = system
        self._units = units
        self._compute = compute
        self._on_failure = on_failure
        self._allow_no_stress = allow_no_stress
        self._warned_no_stress = False
        self.calls = 0
        self.compute_seconds = 0.0

    def attach(self) -> None:
        """Register :meth:`callback` with the fix."""
        self._lmp.set_fix_external_callback(self._fix_id, self.callback)

    def callback(
        self, caller: object, timestep: int, n_local: int, tag: np.ndarray, x: np.ndarray, f: np.ndarray
    ) -> None:
        """fix external's callback: x (n, 3) positions and f (n, 3) forces to fill,
        LAMMPS units, LAMMPS's order (``tag`` gives the atom IDs)."""
        del caller
        try:
            self._serve(n_local, tag, x, f)
        except BaseException as error:  # noqa: BLE001 - see the module docstring
            self._on_failure(int(timestep), error)

    def _serve(self, n_local: int, tag: np.ndarray, x: np.ndarray, f: np.ndarray) -> None:
        order = self._check_atoms(n_local, tag)
        units = self._units
        cell, pbc = lammps_cell(self._lmp)
        structure = Structure(
            positions=np.asarray(x, dtype=np.float64)[order] * units.length,
            cell=cell * units.length,
            pbc=pbc,
        )
        start = time.perf_counter()
        prediction = self._compute(structure)
        self.compute_seconds += time.perf_counter() - start
        self.calls += 1
        virial = self._check_prediction(structure, prediction)
        f[order] = prediction.forces / units.force
        self._lmp.fix_external_set_energy_global(self._fix_id, prediction.energy / units.energy)
        self._lmp.fix_external_set_virial_global(self._fix_id, (virial / units.energy).tolist())

    def _check_atoms(self, n_local: int, tag: np.ndarray) -> np.ndarray:
        """Index array putting LAMMPS's local atoms in tag order, after checking
        that they are the atoms (IDs and types) the bridge attached with."""
        expected = self._system
        if n_local != len(expected.tags):
            raise LammpsInputError(
                f"LAMMPS now has {n_local} atoms but the bridge started with "
                f"{len(expected.tags)}; the model server's template fixes the atom count, "
                "so remove commands that add or delete atoms (fix deposit/evaporate, "
                "create_atoms, delete_atoms) after the fix external line"
            )
        order = np.argsort(tag, kind="stable")
        types = self._lmp.numpy.extract_atom("type")[:n_local][order]
        if not np.array_equal(tag[order], expected.tags) or not np.array_equal(types, expected.types):
            raise LammpsInputError(
                "the atom IDs or types changed since the bridge started; the model "
                "server's template fixes the species of every atom, so keep atom IDs and "
                "types unchanged during the run"
            )
        return order

    def _check_prediction(self, structure: Structure, prediction: Prediction) -> np.ndarray:
        """LAMMPS's (6,) global virial (eV) for ``prediction``, after checking
        that it is finite, has one force per atom and a stress for a periodic box."""
        shape = np.shape(prediction.forces)
        if shape != (structure.n_atoms, 3):
            raise ValueError(
                f"the model returned forces of shape {shape}, expected ({structure.n_atoms}, 3)"
            )
        if not prediction.is_finite():
            raise ValueError("the model returned a non-finite energy, force or stress")
        if prediction.stress is None:
            if bool(np.all(structure.pbc)) and not self._allow_no_stress:
                raise ValueError(
                    "the model returned no stress for a periodic box, so LAMMPS's pressure "
                    "and fix npt would miss the model's virial; serve a model that computes "
                    "stress, or give umadrive lammps --allow-no-stress to use a zero virial "
                    "(right only when nothing uses the pressure: no fix npt/nph, no press)"
                )
            if bool(np.all(structure.pbc)) and not self._warned_no_stress:
                self._warned_no_stress = True
                print("umadrive lammps: warning: the model computes no stress; LAMMPS gets a "
                      "zero virial (--allow-no-stress): its pressure misses the model's part",
                      file=sys.stderr, flush=True)
            return np.zeros(6)
        virial = stress_virial(prediction.stress, structure.volume)
        return np.array([virial[i, j] for i, j in _VIRIAL_VOIGT])
