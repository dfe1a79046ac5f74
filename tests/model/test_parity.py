"""Our UMA against fairchem-core 2.24 (answers committed in tests/data) on the six
structures of issue 3, for a UMA 1.1 S-shaped, an M-shaped (lmax 4, mmax 2) and a
UMA 1.0 checkpoint, in float64 and float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from umadrive.testing import tolerance

CHECKPOINTS = ("s1p1", "m1p1", "s1p0")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", CHECKPOINTS)
def test_matches_fairchem(name, dtype, uma_unit, uma_cases):
    unit = uma_unit(name, dtype)
    tol = tolerance(dtype)
    for label, system, answer in uma_cases(name):
        prediction = unit.predict([system])[0]
        n = len(system.numbers)
        assert abs(prediction.energy - answer["energy"]) / n <= tol.energy_per_atom, label
        np.testing.assert_allclose(prediction.forces, answer["forces"], rtol=0,
                                   atol=tol.forces, err_msg=label)
        if answer["stress"] is None:
            assert prediction.stress is None, label
        else:
            np.testing.assert_allclose(prediction.stress, answer["stress"], rtol=0,
                                       atol=tol.stress, err_msg=label)


def test_fixtures_cover_the_issue_cases(uma_cases, uma_unit):
    """The structures exercise what they claim: many images, mixed pbc, charge/spin,
    and a centre with more neighbours than max_neighbors."""
    from umadrive.model.graph import radius_graph

    unit = uma_unit("s1p1")
    cases = {label: system for label, system, _ in uma_cases("s1p1")}
    assert len(cases["primitive_2_atoms"].numbers) == 2
    assert cases["charged_open_shell"].charge != 0 and cases["charged_open_shell"].spin > 1
    assert list(cases["slab_ttf"].structure.pbc) == [True, True, False]
    crowded = cases["over_max_neighbors"]
    atoms = unit.batch([crowded])
    everything = radius_graph(atoms.positions, atoms.cell, atoms.pbc, atoms.batch,
                              cutoff=unit.model.cutoff, max_neighbors=0)
    assert everything.edge_index.shape[1] / len(crowded.numbers) > unit.model.max_neighbors
