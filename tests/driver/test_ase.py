"""ASE's real ``SocketIOCalculator`` served by ``umadrive serve --model ase:emt``:
energy, forces (and stress when periodic) equal direct EMT to 1e-9."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase.calculators.socketio import SocketIOCalculator

from tests.driver.conftest import free_port
from tests.reference import emt, sheared_copper, small_molecule

WIRE = 1e-9  # eV, eV/Å, eV/Å³: only unit conversions separate the two sides


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["unix", "inet"])
@pytest.mark.parametrize("system", ["sheared periodic cell", "molecule"])
def test_socketio_calculator_matches_direct_emt(processes, tmp_path, socket_name, transport, system):
    atoms = sheared_copper() if system == "sheared periodic cell" else small_molecule()
    structure = tmp_path / "template.extxyz"
    ase.io.write(structure, atoms)
    if transport == "unix":
        server_options, address = {"unixsocket": socket_name}, ["--unix", socket_name]
    else:
        port = free_port()
        server_options, address = {"port": port}, ["--port", str(port)]
    with SocketIOCalculator(timeout=60, **server_options) as calc:
        serve = processes.serve("--model", "ase:emt", "--structure", str(structure), *address,
                                "--connect-timeout", "30")
        probe = atoms.copy()
        probe.calc = calc
        for step in range(3):  # several requests on one connection
            probe.positions = atoms.positions + 0.03 * step * np.sin(np.arange(len(atoms) * 3)).reshape(-1, 3)
            direct = emt(probe)
            assert abs(probe.get_potential_energy() - direct.energy) <= WIRE
            np.testing.assert_allclose(probe.get_forces(), direct.forces, rtol=0, atol=WIRE)
            if atoms.pbc.all():
                np.testing.assert_allclose(probe.get_stress(voigt=False), direct.stress,
                                           rtol=0, atol=WIRE)
            else:
                assert direct.stress is None
    assert processes.wait(serve) == 0, processes.logs()
    assert "closed the connection after 3 requests" in (tmp_path / "serve.log").read_text()
