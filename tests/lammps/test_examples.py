"""The commands of lammps_examples/README.md, run on a copy of the folder with a
few steps each (socket names made unique per test)."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones

from tests.lammps.conftest import thermo_rows
from tests.peers import console_script
from umadrive.testing import ENGINE_CONSTANTS_RTOL

THERMO_PRINT_RTOL = 1e-7  # LAMMPS's default thermo format prints 8 significant digits
N_BEADS = 4


def emt_energy(atoms) -> float:
    atoms = atoms.copy()
    atoms.calc = EMT()
    return atoms.get_potential_energy()


def test_d_data_file_to_template(examples):
    template = ase.io.read(examples / "cuau.extxyz")
    data = ase.io.read(examples / "cuau.data", format="lammps-data", atom_style="atomic", units="metal")
    assert template.get_chemical_symbols() == data.get_chemical_symbols()
    assert sorted(set(template.get_chemical_symbols())) == ["Au", "Cu"]
    np.testing.assert_allclose(template.positions, data.positions, rtol=0, atol=1e-8)
    np.testing.assert_allclose(template.cell.array, data.cell.array, rtol=0, atol=1e-8)
    assert template.pbc.all()


def test_a_nvt(examples, peers):
    status, output, serve_status = peers.run_bridge("in.nvt", "--var", "steps=10", "--template", "cuau.extxyz")
    assert status == 0 and serve_status == 0, peers.logs()
    rows = thermo_rows(output)
    assert [row["Step"] for row in rows] == [0, 10]
    start = emt_energy(ase.io.read(examples / "cuau.extxyz"))
    assert rows[0]["PotEng"] == pytest.approx(start, rel=THERMO_PRINT_RTOL)
    assert rows[1]["PotEng"] != pytest.approx(start, rel=1e-4)  # the atoms moved
    frames = ase.io.read(examples / "nvt.lammpstrj", index=":", format="lammps-dump-text")
    assert len(frames) == 2


def test_b_npt_changes_the_volume(examples, peers):
    status, output, serve_status = peers.run_bridge("in.npt", "--var", "steps=20", "--template", "cuau.extxyz")
    assert status == 0 and serve_status == 0, peers.logs()
    rows = thermo_rows(output)
    assert [row["Step"] for row in rows] == [0, 10, 20]
    assert abs(rows[-1]["Volume"] / rows[0]["Volume"] - 1) > 1e-3


def test_c_ipi_pimd_sums_lammps_and_umadrive(examples, peers):
    umadrive_socket, lammps_socket = peers.socket("pimd-uma"), peers.socket("pimd-lmp")
    xml = (examples / "pimd.xml").read_text()
    xml = xml.replace("<total_steps>100</total_steps>", "<total_steps>3</total_steps>")
    xml = xml.replace(">umadrive_pimd<", f">{umadrive_socket}<").replace(">lammps_pimd<", f">{lammps_socket}<")
    (examples / "pimd.xml").write_text(xml)

    ipi = peers.start("ipi", [console_script("i-pi"), "pimd.xml"])
    peers.wait_for_socket(lammps_socket, ipi)
    lammps = peers.start("lmp", [console_script("lmp"), "-in", "in.ipi_lj", "-var", "socket", lammps_socket])
    serve = peers.serve_emt(umadrive_socket)
    assert peers.wait(ipi) == 0, peers.logs()
    assert peers.wait(serve) == 0, peers.logs()
    peers.wait(lammps)
    assert "Got EXIT message from i-PI" in peers.output(lammps)  # how fix ipi always ends

    potential = np.loadtxt(examples / "pimd.out", usecols=4, ndmin=1)  # eV, mean over beads
    beads = [ase.io.read(examples / f"pimd.pos_{b}.extxyz", index=":") for b in range(N_BEADS)]
    assert len(potential) == 4 and all(len(frames) == 4 for frames in beads)
    lj = LennardJones(sigma=2.6, epsilon=0.005, rc=6.0, smooth=False)  # in.ipi_lj's pair_coeff, shifted
    for step, total in enumerate(potential):
        terms = []
        for frames in beads:
            atoms = frames[step].copy()
            atoms.calc = lj
            terms.append((atoms.get_potential_energy(), emt_energy(atoms)))
        lj_mean, emt_mean = np.mean(terms, axis=0)
        assert abs(lj_mean) > 1.0 and abs(emt_mean) > 0.1  # both terms matter
        assert total == pytest.approx(lj_mean + emt_mean, rel=0, abs=ENGINE_CONSTANTS_RTOL * (abs(lj_mean) + abs(emt_mean)))
    assert np.ptp(potential) > 1e-3  # the beads moved
