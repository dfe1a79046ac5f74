"""Checks every request against the template before anything is computed."""

from __future__ import annotations

import ase
import numpy as np

from umadrive.cell import REFERENCE_CUTOFF, CellError, check_cell
from umadrive.structure import Structure


class RequestError(ValueError):
    """A request the driver refuses to compute; the message names the value, the
    expectation and the fix."""


def check_structure(structure: Structure, template: ase.Atoms) -> Structure:
    """Returns ``structure`` with the periodicity the template allows (a direction
    is periodic when the template says so and the request's lattice vector is not
    zero). Raises :class:`RequestError` for another atom count, non-finite
    positions or cell, or a cell :func:`~umadrive.cell.check_cell` refuses for a
    :data:`~umadrive.cell.REFERENCE_CUTOFF` neighbour search (singular, or too
    thin: any backend would compute for ever)."""
    expected = len(template)
    if structure.n_atoms != expected:
        raise RequestError(
            f"the request has {structure.n_atoms} atoms, the template structure has {expected}: "
            "give --structure the same system (atoms in the same order) the engine simulates"
        )
    for name, values, unit in (("positions", structure.positions, "Å"), ("cell", structure.cell, "Å")):
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise RequestError(
                f"non-finite {name} in the request (row {row}: {values[row].tolist()} {unit}); "
                "expected finite values: the simulation has blown up upstream"
            )
    pbc = np.asarray(structure.pbc) & np.asarray(template.pbc, dtype=bool)
    try:
        check_cell(structure.cell, pbc, REFERENCE_CUTOFF)
    except CellError as error:
        raise RequestError(f"{error}") from None
    return Structure(positions=structure.positions, cell=structure.cell, pbc=pbc)
