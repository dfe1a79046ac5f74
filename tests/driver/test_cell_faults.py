"""A cell no neighbour search should run on is refused before any work, naming
the cell, for any backend: the issue's near-singular cell made ``--model
ase:emt`` compute for ever (memory growing, SIGTERM without effect), and a
singular one failed with "cannot convert float NaN to integer"."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.units import Bohr

from tests.driver.faults import posdata, serve_fault

COPPER_32 = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)  # 32 atoms, 7.2 Å cube
# h as the engine sent it (Bohr, lattice vectors as columns): 0.001 Bohr thick
NEAR_SINGULAR = np.diag([13.606, 13.606, 0.001]).T * Bohr
SINGULAR = np.array([[13.606, 0, 0], [0, 13.606, 0], [13.606, 0, 0]]) * Bohr  # rows: a, b, a again


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("cell", "expected"), [
    (NEAR_SINGULAR, "the cell is too thin for the neighbour search: lattice vector lengths "
                    "7.2, 7.2, 0.0005292 Å, heights (plane spacings) 7.2, 7.2, 0.0005292 Å"),
    (SINGULAR, "the cell is singular (its periodic lattice vectors are linearly dependent)"),
], ids=["near-singular", "singular"])
def test_a_bad_cell_is_refused_before_any_work(socket_name, caplog, cell, expected):
    after, status, errors = serve_fault(socket_name, caplog, COPPER_32, " ",
                                        posdata(COPPER_32, cell=cell))
    assert after == b"", f"the driver answered a bad cell with {after[:60]!r}"  # no FORCEREADY
    assert status == 1, caplog.text
    assert any(expected in message for message in errors), caplog.text
    assert "closing" in caplog.text and "without answering" in caplog.text, caplog.text
    assert "NaN" not in caplog.text, caplog.text
