"""Checks every request against the template before anything is computed."""

from __future__ import annotations

import functools

import ase
import numpy as np

from umadrive.cell import REFERENCE_CUTOFF, CellError, check_cell
from umadrive.structure import Structure


class RequestError(ValueError):
    """A request the driver refuses to compute; the message names the value, the
    expectation and the fix."""


def check_structure(structure: Structure, template: ase.Atoms, *,
                    pbc: tuple[bool, bool, bool] | None = None) -> Structure:
    """Returns ``structure`` with the periodicity it is computed with. Raises
    :class:`RequestError` for another atom count, non-finite positions or cell,
    a periodicity that differs from the template's, or a cell
    :func:`~umadrive.cell.check_cell` refuses for a
    :data:`~umadrive.cell.REFERENCE_CUTOFF` neighbour search (singular, or too
    thin: any backend would compute for ever).

    The engine's periodicity is where it sends a non-zero lattice vector; it
    must be the template's (an engine sending a cell for a template without
    one, or none for a periodic template, would silently get other physics).
    ``pbc`` (``--pbc``) overrides the template's: directions it marks periodic
    need a non-zero lattice vector, the others are computed without the
    engine's vector along them."""
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
    sent = np.asarray(structure.pbc, dtype=bool)
    periodic = _check_periodicity(sent, structure.cell, template, pbc)
    refusal = _cell_refusal(np.asarray(structure.cell, dtype=np.float64).tobytes(),
                            tuple(bool(p) for p in periodic))
    if refusal is not None:
        raise RequestError(refusal)
    return Structure(positions=structure.positions, cell=structure.cell, pbc=periodic)


@functools.lru_cache(maxsize=64)
def _cell_refusal(cell: bytes, periodic: tuple[bool, ...]) -> str | None:
    """check_cell's message for a cell (float64 bytes, rows) or None; remembered,
    since the beads of a step and the steps of a fixed-cell run share one cell."""
    try:
        check_cell(np.frombuffer(cell).reshape(3, 3), np.array(periodic), REFERENCE_CUTOFF)
    except CellError as error:
        return f"{error}"
    return None


def _check_periodicity(sent: np.ndarray, cell: np.ndarray, template: ase.Atoms,
                       pbc: tuple[bool, bool, bool] | None) -> np.ndarray:
    if pbc is None:
        wanted = np.asarray(template.pbc, dtype=bool)
        if not np.array_equal(wanted, sent):
            raise RequestError(
                f"{_engine(sent, cell)}, but the template structure has pbc {_flags(wanted)}: computing it "
                "would silently give other physics. Give --structure a template with the "
                f"engine's cell, or say which directions are periodic with --pbc "
                f"(--pbc {_flags(sent)}: as the engine sends it; --pbc {_flags(wanted & sent)}: "
                "ignore the engine's cell where the template has none)")
        return wanted
    wanted = np.asarray(pbc, dtype=bool)
    if (wanted & ~sent).any():
        raise RequestError(
            f"{_engine(sent, cell)}, but --pbc {_flags(wanted)} asks for a periodic direction where the "
            f"lattice vector is zero; use --pbc {_flags(wanted & sent)} or give the engine a "
            "cell in those directions")
    return wanted


def _engine(sent: np.ndarray, cell: np.ndarray) -> str:
    """What the engine sent, for the messages (formatted only when one is raised)."""
    lengths = ", ".join(f"{length:.4g}" for length in np.linalg.norm(cell, axis=1))
    return f"the engine sends lattice vectors of lengths {lengths} Å (pbc {_flags(sent)})"


def _flags(pbc: np.ndarray) -> str:
    """(3,) bool as ``--pbc`` writes it, e.g. ``TTF``."""
    return "".join("T" if p else "F" for p in pbc)
