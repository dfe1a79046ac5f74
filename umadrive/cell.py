"""Cell checks made before any work: a cell that is not finite, is singular, or
is so thin or tilted that a neighbour search would have to walk through an
absurd number of periodic images is refused with a :class:`CellError` naming the
cell's lengths and heights, the cutoff and the limit.

A neighbour search within ``cutoff`` must look ``n_k = ceil(cutoff / h_k)``
images each way along lattice direction ``k``, where the height ``h_k`` is the
spacing of the lattice planes spanned by the other two vectors (``1 / h_k`` is
the norm of the reciprocal vector without 2π, as in fairchem's
``radius_graph_pbc``). The cost grows with ``prod(2 n_k + 1)``: a cell
0.001 Bohr thick needs over 20 000 images along that direction and a search
that never ends. Limits: :data:`MAX_IMAGES_PER_DIRECTION` each way along any
direction and :data:`MAX_PERIODIC_IMAGES` in all. A one-atom fcc copper cell
with a 6 Å cutoff needs 3 each way, 343 in all.

Conventions as in :mod:`umadrive.structure`: lengths in Å, lattice vectors as
rows. Only numpy is needed, so every package may import this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_IMAGES_PER_DIRECTION = 50
"""Periodic images each way along one lattice direction; beyond it the cell is
almost surely wrong (a 6 Å cutoff then means planes 0.12 Å apart)."""

MAX_PERIODIC_IMAGES = 100_000
"""Periodic images in all, ``prod(2 n_k + 1)`` over the periodic directions."""

MAX_LATTICE_LENGTH = 1.0e6
"""Å: a periodic lattice vector longer than this is refused (a unit mix-up, or a
blown-up simulation; beyond ~1e100 Å the volume would not even be representable)."""

SINGULAR_TOLERANCE = 1e-8
"""A cell is singular when ``|det| < this * product of the vector lengths``."""

REFERENCE_CUTOFF = 6.0
"""Å: the range the driver assumes when it checks a request's cell (UMA's
cutoff; ASE calculators declare none)."""


class CellError(ValueError):
    """A cell no neighbour search should run on; the message names the lengths,
    heights, cutoff and limit, and what to fix."""


@dataclass(frozen=True)
class CellGeometry:
    """A checked cell.

    lattice: (3, 3) Å, full rank: the periodic rows of the cell, and orthonormal
        vectors completing them to a basis in the non-periodic rows.
    heights: (3,) Å, the spacing of the lattice planes along each direction
        (inf along non-periodic ones).
    reach: (3,) the cutoff in units of the heights (0 along non-periodic
        directions); ``images = ceil(reach)`` each way cover the cutoff sphere.
    """

    lattice: np.ndarray
    heights: np.ndarray
    reach: np.ndarray

    @property
    def images(self) -> np.ndarray:
        """(3,) int: periodic images each way along each direction."""
        return np.ceil(self.reach).astype(np.int64)


def check_cell(cell: np.ndarray, pbc: np.ndarray, cutoff: float, *,
               max_images_per_direction: int = MAX_IMAGES_PER_DIRECTION,
               max_images: int = MAX_PERIODIC_IMAGES) -> CellGeometry:
    """Checks ``cell`` (3, 3) Å, lattice vectors as rows, periodic along ``pbc``
    (3,) bool, for a neighbour search within ``cutoff`` Å. Returns its
    :class:`CellGeometry`; raises :class:`CellError` for a non-finite cell, a
    zero or linearly dependent periodic vector, or one that needs more periodic
    images than the limits."""
    rows = np.asarray(cell, dtype=np.float64)
    flags = np.asarray(pbc, dtype=bool)
    if rows.shape != (3, 3) or flags.shape != (3,):
        raise CellError(f"a cell must be (3, 3) with pbc (3,), got {rows.shape} and {flags.shape}")
    if not np.all(np.isfinite(rows)):
        raise CellError(f"the cell holds non-finite values {rows.tolist()} Å; expected finite "
                        "lattice vectors: the simulation has blown up upstream")
    lengths = np.linalg.norm(rows, axis=1)
    if lengths[flags].max(initial=0.0) > MAX_LATTICE_LENGTH:
        raise CellError(f"the cell has periodic lattice vectors of lengths "
                        f"{_angstrom(lengths[flags])} Å, beyond {MAX_LATTICE_LENGTH:g} Å; check "
                        "the units of the cell the engine sends")
    scale = max(float(lengths[flags].max(initial=0.0)), 1.0)
    for direction in np.flatnonzero(flags & (lengths < 1e-8 * scale)):
        raise CellError(f"the cell is periodic along lattice vector {direction}, but that vector "
                        f"is zero ({rows[direction].tolist()} Å); give the lattice vector, or "
                        "make that direction non-periodic")
    lattice = _completed(rows, flags)
    volume = abs(float(np.linalg.det(lattice)))
    heights = _heights(lattice, volume)
    heights[~flags] = np.inf
    def described() -> str:  # formatted only for a message
        return (f"lattice vector lengths {_angstrom(lengths[flags])} Å, heights (plane "
                f"spacings) {_angstrom(heights[flags])} Å along periodic directions "
                f"{np.flatnonzero(flags).tolist()}")
    if volume < SINGULAR_TOLERANCE * float(np.prod(np.linalg.norm(lattice, axis=1))):
        raise CellError(f"the cell is singular (its periodic lattice vectors are linearly "
                        f"dependent): {described()}; give independent lattice vectors (check the "
                        "cell the engine sends, and its units)")
    reach = np.where(flags, cutoff / heights, 0.0)
    images = np.ceil(reach)
    total = float(np.prod(2 * images + 1))
    if images.max() > max_images_per_direction or total > max_images:
        worst = int(np.argmax(reach))
        raise CellError(
            f"the cell is too thin for the neighbour search: {described()}; a {cutoff:g} Å cutoff "
            f"needs {int(images[worst])} periodic images each way along direction {worst} "
            f"({total:.3g} in all; limits {max_images_per_direction} each way, {max_images} in "
            "all); check the cell the engine sends (its units, and whether that direction "
            "should be periodic at all)")
    return CellGeometry(lattice=lattice, heights=heights, reach=reach)


def _completed(rows: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """The periodic rows, with the non-periodic ones replaced by an orthonormal
    basis of the periodic rows' orthogonal complement."""
    lattice = rows.copy()
    periodic_rows = rows[flags]
    _, _, vt = np.linalg.svd(periodic_rows if len(periodic_rows) else np.zeros((1, 3)))
    complement = iter(vt[len(periodic_rows):])
    for direction in np.flatnonzero(~flags):
        lattice[direction] = next(complement)
    return lattice


def _heights(lattice: np.ndarray, volume: float) -> np.ndarray:
    """Plane spacing along each row: volume / area of the other two rows' face."""
    areas = np.array([np.linalg.norm(np.cross(lattice[(k + 1) % 3], lattice[(k + 2) % 3]))
                      for k in range(3)])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(areas > 0, volume / areas, 0.0)


def _angstrom(values: np.ndarray) -> str:
    return ", ".join(f"{v:.4g}" for v in values)
