"""Fault injection: a hand-written misbehaving server sends the driver (embedded
in the test process) bad input. The driver must log an error naming the value
and the expectation, end with status 1, and send nothing after the handshake."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.units import Bohr

from tests.driver.faults import posdata, serve_fault

TEMPLATE = bulk("Cu", "fcc", a=3.6, cubic=True)  # 4 atoms


def with_nan_position() -> bytes:
    positions = TEMPLATE.positions / Bohr
    positions[2, 1] = np.nan
    return posdata(TEMPLATE, positions=positions)


def with_inf_cell() -> bytes:
    cell = TEMPLATE.cell.array.copy()
    cell[1, 1] = np.inf
    return posdata(TEMPLATE, cell=cell)


NAN_CALCULATOR = "ase:tests.driver.nan_calculator:NaNCalculator"
CASES = {
    # name: (INIT text, bytes after the handshake, serve keywords, expected in the log)
    "nat above max_atoms": (" ", posdata(TEMPLATE, nat=1001, positions=np.zeros((0, 3))),
                            {"options": {"max_atoms": 1000}}, "nat in [0, 1000]"),
    "negative nat": (" ", posdata(TEMPLATE, nat=-5, positions=np.zeros((0, 3))), {},
                     "received -5"),
    "unknown header": (" ", b"BOGUS       ", {}, "received 'BOGUS'"),
    "truncated payload": (" ", posdata(TEMPLATE)[:100], {}, "end of stream after"),
    "non-finite positions": (" ", with_nan_position(), {}, "non-finite positions"),
    "non-finite cell": (" ", with_inf_cell(), {}, "non-finite cell"),
    "atom count differs from the template": (
        " ", posdata(TEMPLATE, positions=TEMPLATE.positions[:3] / Bohr), {},
        "nat=4 atoms, the template's count (give --structure the system the engine simulates, "
        "atoms in the same order), received nat=3"),
    "a claimed nat far beyond the template's": (
        " ", posdata(TEMPLATE, nat=9_999_999, positions=np.zeros((0, 3))), {},
        "nat=4 atoms, the template's count"),
    "bad batch_size in INIT": (" batch_size:0", b"", {"handshake": False},
                               "batch_size in [1, 4096]"),
    "non-finite result from the backend": (" ", posdata(TEMPLATE), {"model": NAN_CALCULATOR},
                                           "non-finite values"),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_and_nothing_is_sent(socket_name, caplog, case):
    init_text, bad, keywords, expected = CASES[case]
    after, status, errors = serve_fault(socket_name, caplog, TEMPLATE, init_text, bad, **keywords)
    assert after == b"", f"the driver answered bad input with {after[:60]!r}"
    assert status == 1, caplog.text
    assert any(expected in message for message in errors), caplog.text
