"""The PIMD run the transport tests share: 8 beads of a periodic, triclinic Cu3Au
alloy for a few steps, and the check that every bead's potential and forces i-PI
printed equal a direct EMT call on the positions i-PI printed for that bead."""

from __future__ import annotations

import re
from pathlib import Path

import ase
import ase.io
import numpy as np
from ase.units import Hartree

from tests.reference import cu3au_32, emt
from umadrive.ipi_input import IpiRun, ipi_input_xml
from umadrive.testing import tolerance

NBEADS = 8
STEPS = 3
TOL = tolerance("printed")


def pimd_input(folder: Path, **transport: object) -> str:
    """Writes the alloy to ``folder`` and returns the i-PI input for the PIMD run;
    ``transport`` are :class:`IpiRun` fields (``unix``, ``transport``, ``batch_size``)."""
    ase.io.write(folder / "alloy.extxyz", cu3au_32())
    run = IpiRun(structure="alloy.extxyz", ensemble="nvt", nbeads=NBEADS, steps=STEPS,
                 properties=("step", "bead_potentials"), trajectories=("positions", "forces"),
                 **transport)
    return ipi_input_xml(run)


def assert_every_bead_matches_emt(folder: Path) -> None:
    table = np.loadtxt(folder / "sim.out", ndmin=2)
    assert table.shape == (STEPS + 1, 1 + NBEADS)
    positions, forces = ([ase.io.read(folder / f"sim.{what}_{b}.extxyz", index=":")
                          for b in range(NBEADS)] for what in ("positions", "forces"))
    symbols = cu3au_32().get_chemical_symbols()
    for row, step in enumerate(table[:, 0]):
        frames = [frames[row] for frames in positions]
        assert all(a.get_chemical_symbols() == symbols for a in frames)
        direct = [emt(atoms) for atoms in frames]
        if row > 0:  # the beads have spread apart: an answer for the wrong bead would show
            assert len({round(d.energy, 6) for d in direct}) == NBEADS
        for bead, (atoms, want) in enumerate(zip(frames, direct)):
            got = table[row, 1 + bead] * Hartree
            assert abs(got - want.energy) <= TOL.energy_per_atom * len(atoms), (step, bead)
            got_forces = forces[bead][row].get_forces()  # eV/Å (i-PI's forces{ase})
            np.testing.assert_allclose(got_forces, want.forces, rtol=0, atol=TOL.forces,
                                       err_msg=f"step {step}, bead {bead}")


def requests_served(log: str) -> dict[str, int]:
    """Requests each driver answered, from the final lines of ``umadrive serve``
    (keyed by the log prefix, e.g. ``umadrive serve[rank 1]``)."""
    final_line = r"^(umadrive serve(?:\[rank \d+\])?): INFO: .* after (\d+) requests"
    return {prefix: int(count) for prefix, count in re.findall(final_line, log, re.M)}
