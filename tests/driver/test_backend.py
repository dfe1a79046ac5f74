"""``make_backend``: the spec forms it accepts and the errors for the others."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.lj import LennardJones

from tests.reference import sheared_copper, to_structure
from umadrive.driver.backends import make_backend


def test_any_ase_calculator_by_import_path_with_kwargs():
    atoms = sheared_copper()
    backend = make_backend("ase:ase.calculators.lj:LennardJones", atoms, sigma=2.3, epsilon=0.4)
    (got,) = backend.compute([to_structure(atoms)])
    reference = atoms.copy()
    reference.calc = LennardJones(sigma=2.3, epsilon=0.4)
    assert got.energy == pytest.approx(reference.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(got.forces, reference.get_forces(), atol=1e-12)
    assert got.stress is not None and got.stress.shape == (3, 3)


@pytest.mark.parametrize("spec, message", [
    ("emt", "--model 'emt': .*or use 'ase:emt'"),  # not a file: taken as a UMA model name
    ("ase:", "--model 'ase:': expected 'ase:emt' or 'ase:package.module:Class'"),
    ("ase:nosuchmodule:Calc", "cannot load Calc from nosuchmodule"),
    ("ase:ase.calculators.emt:NoSuchClass", "cannot load NoSuchClass"),
    ("ase:ase.calculators.emt", "expected 'ase:emt' or 'ase:package.module:Class'"),
])
def test_bad_specs_say_what_is_accepted(spec, message):
    with pytest.raises(ValueError, match=message):
        make_backend(spec, sheared_copper())
