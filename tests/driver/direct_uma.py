"""Direct one-structure UMA calls on i-PI's bead trajectories, run as its own
process with one torch thread (the test process keeps torch's defaults):

    python -m tests.driver.direct_uma CHECKPOINT TASK OUT.json TRAJECTORY...

Writes ``[[energy eV for each frame] for each trajectory]`` in float64."""

from __future__ import annotations

import json
import sys

import ase.io
import torch

from tests.reference import to_structure
from umadrive.model.predictor import System, get_predict_unit
from umadrive.model.settings import InferenceSettings


def main(checkpoint: str, task: str, out: str, *trajectories: str) -> None:
    torch.set_num_threads(1)
    unit = get_predict_unit(checkpoint, "cpu", InferenceSettings(base_precision_dtype=torch.float64))
    energies = [[unit.predict([System(numbers=atoms.numbers, structure=to_structure(atoms),
                                      task=task, charge=0, spin=0)])[0].energy
                 for atoms in ase.io.read(path, index=":")]
                for path in trajectories]
    with open(out, "w") as file:
        json.dump(energies, file)


if __name__ == "__main__":
    main(*sys.argv[1:])
