"""``umadrive plot`` on a real i-PI run served by ``umadrive serve --log-json``:
the PNG decodes, and each panel holds the run's data as i-PI and the driver wrote it."""

from __future__ import annotations

import json
import subprocess
import sys

import ase.io
import matplotlib.image
import numpy as np
import pytest
from ase.units import Hartree, kB

from tests.reference import sheared_copper
from umadrive.ipi_input import IpiRun, ipi_input_xml
from umadrive.plots import RunDataError, figure, read_run

PROPERTIES = ("step", "conserved", "temperature", "potential{electronvolt}")  # Hartree, au, eV
STEPS = 12


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    from tests.driver.conftest import Processes

    folder = tmp_path_factory.mktemp("plot")
    ase.io.write(folder / "start.extxyz", sheared_copper())
    processes = Processes(folder, timeout_s=120)
    socket_name = processes.socket("plot")
    try:
        run = IpiRun(structure="start.extxyz", steps=STEPS, unix=socket_name, ensemble="nvt",
                     temperature_k=250.0, properties=PROPERTIES)
        ipi = processes.ipi(ipi_input_xml(run))
        serve = processes.serve("--model", "ase:emt", "--structure", "start.extxyz", "--unix",
                                socket_name, "--log-json", "serve.jsonl", "--log-every", "4")
        assert processes.wait(ipi) == 0, processes.logs()
        assert processes.wait(serve) == 0, processes.logs()
    finally:
        processes.stop_all()
    return folder


def panel_data(fig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {ax.get_ylabel(): tuple(np.asarray(a) for a in ax.get_lines()[0].get_data())
            for ax in fig.axes}


def test_plot_command_writes_a_png_of_the_run(run_folder):
    result = subprocess.run([sys.executable, "-m", "umadrive", "plot", str(run_folder)],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"wrote {run_folder / 'run.png'}"
    image = matplotlib.image.imread(run_folder / "run.png")
    assert image.ndim == 3 and image.shape[0] > 400 and image.shape[1] > 400


def test_panels_hold_what_ipi_and_the_driver_wrote(run_folder):
    table = np.loadtxt(run_folder / "sim.out", ndmin=2)  # columns in PROPERTIES order
    steps = table[:, 0]
    panels = panel_data(figure(read_run(run_folder)))
    atoms = len(sheared_copper())
    np.testing.assert_allclose(panels["potential energy (eV)"][1], table[:, 3])
    np.testing.assert_allclose(panels["temperature (K)"][1], table[:, 2] * Hartree / kB)
    np.testing.assert_allclose(panels["conserved-quantity drift (meV/atom)"][1],
                               (table[:, 1] - table[0, 1]) * Hartree * 1000 / atoms)
    for label in ("potential energy (eV)", "temperature (K)", "conserved-quantity drift (meV/atom)"):
        np.testing.assert_array_equal(panels[label][0], steps)
    assert len(steps) == STEPS + 1
    status = [json.loads(line) for line in (run_folder / "serve.jsonl").read_text().splitlines()]
    status = [r for r in status if r.get("event") == "status"]
    x, y = panels["driver time per step (ms)"]
    np.testing.assert_array_equal(x, np.cumsum([r["steps"] for r in status]))
    np.testing.assert_allclose(y, [r["ms_wait"] + r["ms_receive"] + r["ms_model"] + r["ms_send"]
                                   for r in status])
    temperature_axis = figure(read_run(run_folder)).axes[1]
    assert [line.get_ydata()[0] for line in temperature_axis.get_lines()[1:]] == [250.0]


def test_plot_of_a_log_json_file_alone_draws_the_step_time(run_folder, tmp_path):
    png = tmp_path / "t.png"
    subprocess.run([sys.executable, "-m", "umadrive", "plot", str(run_folder / "serve.jsonl"),
                    "-o", str(png)], check=True, capture_output=True)
    assert matplotlib.image.imread(png).ndim == 3
    assert list(panel_data(figure(read_run(run_folder / "serve.jsonl")))) == [
        "driver time per step (ms)"]


def test_plot_errors_say_what_was_expected(tmp_path):
    result = subprocess.run([sys.executable, "-m", "umadrive", "plot", str(tmp_path / "nope")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "no such file or folder; give a run folder" in result.stderr
    (tmp_path / "x.out").write_text("1 2 3\n")
    with pytest.raises(RunDataError, match=r"no '# column N --> step' header"):
        read_run(tmp_path / "x.out")
