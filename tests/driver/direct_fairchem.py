"""Direct one-structure fairchem calls on i-PI's bead trajectories: fairchem's own
ASE calculator (FAIRChemCalculator), its ``batch`` preset in float64, one torch
thread, run as its own process:

    python -m tests.driver.direct_fairchem CHECKPOINT TASK OUT.json TRAJECTORY...

Writes ``{"energies": [[eV per frame] per trajectory], "forces": [[(n, 3) eV/Å
per frame] per trajectory]}``."""

from __future__ import annotations

import dataclasses
import json
import sys

import ase.io
import torch
from fairchem.core.calculate.ase_calculator import FAIRChemCalculator
from fairchem.core.units.mlip_unit import load_predict_unit
from fairchem.core.units.mlip_unit.api.inference import NAME_TO_INFERENCE_SETTING


def main(checkpoint: str, task: str, out: str, *trajectories: str) -> None:
    torch.set_num_threads(1)
    settings = dataclasses.replace(NAME_TO_INFERENCE_SETTING["batch"],
                                   base_precision_dtype=torch.float64)
    calculator = FAIRChemCalculator(load_predict_unit(checkpoint, settings, device="cpu"),
                                    task_name=task)
    energies: list[list[float]] = []
    forces: list[list[list]] = []
    for path in trajectories:
        energies.append([])
        forces.append([])
        for atoms in ase.io.read(path, index=":"):
            atoms.info.update(charge=0, spin=0)
            atoms.calc = calculator
            energies[-1].append(atoms.get_potential_energy())
            forces[-1].append(atoms.get_forces().tolist())
    with open(out, "w") as file:
        json.dump({"energies": energies, "forces": forces}, file)


if __name__ == "__main__":
    main(*sys.argv[1:])
