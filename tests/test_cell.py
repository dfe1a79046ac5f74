"""umadrive.cell: heights and image counts against ASE's reciprocal cell, and
every refusal naming the cell, the cutoff and the limit."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, fcc111
from ase.cell import Cell

from umadrive.cell import (MAX_IMAGES_PER_DIRECTION, MAX_PERIODIC_IMAGES, CellError,
                           check_cell)

CUTOFF = 6.0


@pytest.mark.parametrize("atoms", [
    bulk("Cu", "fcc", a=3.6),  # one-atom primitive cell, heights 2.08 Å
    bulk("Cu", "fcc", a=3.6, cubic=True),
    bulk("Ti", "hcp", a=2.95, c=4.68),
    Cell.new([4.1, 5.3, 6.2, 71.0, 83.0, 101.0]),  # triclinic
], ids=["primitive", "cubic", "hcp", "triclinic"])
def test_heights_and_images_follow_the_reciprocal_cell(atoms):
    cell = atoms if isinstance(atoms, Cell) else atoms.cell
    geometry = check_cell(cell.array, np.ones(3, bool), CUTOFF)
    # ASE's reciprocal vectors (no 2π) have norm 1 / plane spacing
    heights = 1.0 / np.linalg.norm(cell.reciprocal(), axis=1)
    np.testing.assert_allclose(geometry.heights, heights, rtol=1e-12)
    np.testing.assert_array_equal(geometry.images, np.ceil(CUTOFF / heights).astype(int))
    np.testing.assert_allclose(geometry.lattice, cell.array)


def test_a_slab_is_periodic_in_two_directions_only():
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=None)  # cell[2] is zero: not periodic
    pbc = np.array([True, True, False])
    geometry = check_cell(slab.cell.array, pbc, CUTOFF)
    area = np.linalg.norm(np.cross(slab.cell[0], slab.cell[1]))
    # heights in the plane: area over the other in-plane vector's length
    np.testing.assert_allclose(geometry.heights[:2], area / np.linalg.norm(slab.cell[[1, 0]], axis=1))
    assert geometry.heights[2] == np.inf and geometry.images[2] == 0
    assert abs(np.linalg.det(geometry.lattice)) > 0


@pytest.mark.parametrize(("cell", "pbc", "message"), [
    (np.diag([7.2, 7.2, np.nan]), [1, 1, 1], r"non-finite values .* blown up upstream"),
    (np.diag([7.2, 0.0, 7.2]), [1, 1, 1],
     r"periodic along lattice vector 1, but that vector is zero .* make that direction non-periodic"),
    (np.array([[7.2, 0, 0], [0, 7.2, 0], [7.2, 0, 0]]), [1, 1, 1],
     r"singular .* lattice vector lengths 7.2, 7.2, 7.2 Å, heights \(plane spacings\) 0, 0, 0 Å"),
    (np.array([[7.2, 0, 0], [-7.2, 0, 0], [0, 0, 0]]), [1, 1, 0], "singular"),
    (np.diag([7.2, 7.2, 0.0005292]), [1, 1, 1],
     r"too thin .* lengths 7.2, 7.2, 0.0005292 Å, heights \(plane spacings\) 7.2, 7.2, 0.0005292 Å"
     r".* a 6 Å cutoff needs 11338 periodic images each way along direction 2 .* limits 50 each "
     r"way, 100000 in all\); check the cell the engine sends"),
    # 7 Å tilted almost flat: 2.4e-3 Å between planes
    (np.array([[7.2, 0, 0], [0, 7.2, 0], [7.0, 7.0, 0.0024]]), [1, 1, 1], r"too thin .* direction 2"),
    (np.diag([7.2, 7.2, 3e9]), [1, 1, 1], r"lengths 7.2, 7.2, 3e\+09 Å, beyond 1e\+06 Å; check the units"),
], ids=["nan", "zero-vector", "singular", "singular-2d", "thin", "tilted", "huge"])
def test_bad_cells_are_refused_naming_the_cell(cell, pbc, message):
    with pytest.raises(CellError, match=message):
        check_cell(cell, np.array(pbc, bool), CUTOFF)


def test_the_total_image_limit_holds_when_no_direction_exceeds_its_own():
    # 0.2 Å planes in all three directions: 30 images each way, 61**3 in all
    heights = CUTOFF / 30
    assert 30 <= MAX_IMAGES_PER_DIRECTION and 61 ** 3 > MAX_PERIODIC_IMAGES
    with pytest.raises(CellError, match=r"needs 30 periodic images each way .* \(2.27e\+05 in all"):
        check_cell(np.eye(3) * heights, np.ones(3, bool), CUTOFF)
    geometry = check_cell(np.eye(3) * heights, np.ones(3, bool), CUTOFF, max_images=61 ** 3)
    assert geometry.images.tolist() == [30, 30, 30]
