"""Writes cuau.data: a 108-atom random CuAu fcc alloy (3x3x3 conventional cells,
a = 3.87 Å, 54 Cu + 54 Au, fixed seed) as a LAMMPS data file (units metal,
atom_style atomic, with Masses). Run once; the output is committed."""

import numpy as np
from ase.build import bulk
from ase.io import write

atoms = bulk("Cu", "fcc", a=3.87, cubic=True).repeat((3, 3, 3))
rng = np.random.default_rng(20250722)
symbols = np.array(atoms.get_chemical_symbols())
symbols[rng.permutation(len(atoms))[: len(atoms) // 2]] = "Au"
atoms.set_chemical_symbols(symbols)
write("cuau.data", atoms, format="lammps-data", specorder=["Cu", "Au"], masses=True, units="metal")
