"""A calculator that returns NaN forces: what a diverged model looks like."""

import numpy as np
from ase.calculators.calculator import Calculator, all_changes


class NaNCalculator(Calculator):
    implemented_properties = ["energy", "forces", "stress"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        forces = np.zeros((len(self.atoms), 3))
        forces[0, 0] = np.nan
        self.results = {"energy": 0.0, "forces": forces, "stress": np.zeros(6)}
