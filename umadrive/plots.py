"""Pictures of a run: potential energy, temperature against its target and the
drift of the conserved quantity per MD step, plus the driver's time per step.

Sources: an i-PI properties file (``*.out``, columns named in its ``# column``
header), a run folder holding one (with ``input.xml`` for the target
temperature and atom count, and the driver's ``--log-json`` file
``serve.jsonl`` when present), or a ``--log-json`` file alone (time per step).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import units

_COLUMN = re.compile(r"^#\s*column\s+(\d+)(?:-(\d+))?\s+-->\s+([^\s:{]+)(?:\{([^}]*)\})?")
_ENERGY_UNITS = {None: units.Hartree, "atomic_unit": units.Hartree, "hartree": units.Hartree,
                 "electronvolt": 1.0, "ev": 1.0}
_TEMPERATURE_UNITS = {None: units.Hartree / units.kB, "atomic_unit": units.Hartree / units.kB,
                      "kelvin": 1.0}
SERVE_LOG_JSON = "serve.jsonl"


class RunDataError(ValueError):
    """Nothing to plot in the given file or folder; the message says what was looked for."""


@dataclass(frozen=True)
class RunSeries:
    """What one run recorded, per MD step.

    steps: (n,) MD step numbers. potential_ev, conserved_ev: (n,) eV, or None.
    temperature_k: (n,) K, or None. target_k: the thermostat's temperature (K), or None.
    atoms: atoms per replica (for per-atom drift), or None.
    driver_steps, driver_ms: the driver's forward passes (end of each status
    span) and the mean wall time per pass in that span (ms), or None.
    """

    source: str
    steps: np.ndarray | None = None
    potential_ev: np.ndarray | None = None
    conserved_ev: np.ndarray | None = None
    temperature_k: np.ndarray | None = None
    target_k: float | None = None
    atoms: int | None = None
    driver_steps: np.ndarray | None = None
    driver_ms: np.ndarray | None = None

    def drift_mev(self) -> np.ndarray | None:
        """Conserved quantity minus its first value: meV per atom (meV when the atom
        count is unknown)."""
        if self.conserved_ev is None:
            return None
        return (self.conserved_ev - self.conserved_ev[0]) * 1000 / (self.atoms or 1)


def read_ipi_properties(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The columns of an i-PI properties file by name, converted to eV and K."""
    columns: dict[str, tuple[int, str | None]] = {}
    with open(path) as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            match = _COLUMN.match(line)
            if match and match.group(2) is None:
                columns[match.group(3)] = (int(match.group(1)) - 1, match.group(4))
    if "step" not in columns:
        raise RunDataError(f"{os.fspath(path)}: no '# column N --> step' header; expected an "
                           "i-PI properties file (<properties filename='out'>)")
    table = np.loadtxt(path, comments="#", ndmin=2)
    values = {"step": table[:, columns["step"][0]]} if len(table) else {"step": np.zeros(0)}
    for name, table_units in (("potential", _ENERGY_UNITS), ("conserved", _ENERGY_UNITS),
                              ("temperature", _TEMPERATURE_UNITS)):
        if name in columns and len(table):
            index, unit = columns[name]
            if unit not in table_units:
                raise RunDataError(f"{os.fspath(path)}: column {name}{{{unit}}}: unit not known "
                                   f"here; write it in one of {sorted(u for u in table_units if u)}")
            values[name] = table[:, index] * table_units[unit]
    return values


def read_log_json(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, int | None]:
    """From a ``umadrive serve --log-json`` file: the forward pass ending each status
    span, the mean wall time per pass in it (ms), and the template's atom count."""
    ends, ms, atoms, done = [], [], None, 0
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise RunDataError(f"{os.fspath(path)}, line {number}: not JSON; expected a "
                                   "umadrive serve --log-json file") from None
            if record.get("event") == "loaded":
                atoms = record.get("atoms")
            elif record.get("event") == "status" and record.get("steps"):
                done += record["steps"]
                ends.append(done)
                ms.append(sum(record[key] for key in ("ms_wait", "ms_receive", "ms_model",
                                                      "ms_send")))
    return np.array(ends, dtype=float), np.array(ms, dtype=float), atoms


def read_run(path: str | os.PathLike) -> RunSeries:
    """The series of a run folder, an i-PI properties file or a ``--log-json`` file."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        raise RunDataError(f"{os.fspath(path)}: no such file or folder; give a run folder, an "
                           "i-PI properties file (*.out) or a --log-json file (*.jsonl)")
    if path.suffix in (".jsonl", ".json"):
        ends, ms, atoms = read_log_json(path)
        if not len(ends):
            raise RunDataError(f"{path}: no status lines; run umadrive serve with --log-json "
                               "FILE and --log-every N (N > 0)")
        return RunSeries(source=str(path), driver_steps=ends, driver_ms=ms, atoms=atoms)
    columns = read_ipi_properties(path)
    return RunSeries(source=str(path), steps=columns["step"],
                     potential_ev=columns.get("potential"),
                     conserved_ev=columns.get("conserved"),
                     temperature_k=columns.get("temperature"))


def _read_folder(folder: Path) -> RunSeries:
    tables = [p for p in sorted(folder.glob("*.out")) if _is_properties(p)]
    if not tables:
        raise RunDataError(f"{folder}: no i-PI properties file (*.out with a '# column' "
                           "header) in this folder")
    series = read_run(tables[0])
    target, atoms = _from_input(folder / "input.xml")
    driver = folder / SERVE_LOG_JSON
    ends = ms = None
    if driver.is_file():
        ends, ms, logged_atoms = read_log_json(driver)
        atoms = atoms or logged_atoms
    return RunSeries(source=str(folder), steps=series.steps, potential_ev=series.potential_ev,
                     conserved_ev=series.conserved_ev, temperature_k=series.temperature_k,
                     target_k=target, atoms=atoms,
                     driver_steps=ends if ends is not None and len(ends) else None,
                     driver_ms=ms if ms is not None and len(ms) else None)


def _is_properties(path: Path) -> bool:
    with open(path) as handle:
        return bool(_COLUMN.match(handle.readline()))


def _from_input(path: Path) -> tuple[float | None, int | None]:
    """The thermostat temperature (K) and the atom count of an i-PI input file."""
    if not path.is_file():
        return None, None
    import xml.etree.ElementTree as ElementTree

    import ase.io

    root = ElementTree.parse(path).getroot()
    target = None
    element = root.find(".//ensemble/temperature")
    if element is not None and element.text:
        unit = element.get("units", "atomic_unit")
        if unit in _TEMPERATURE_UNITS:
            target = float(element.text) * _TEMPERATURE_UNITS[unit]
    atoms = None
    init = root.find(".//initialize/file")
    if init is not None and init.text and (path.parent / init.text.strip()).is_file():
        atoms = len(ase.io.read(path.parent / init.text.strip()))
    return target, atoms


def figure(series: RunSeries):
    """A matplotlib Figure (no pyplot, no global state): one panel per recorded
    quantity, in the order potential energy, temperature, conserved-quantity
    drift, driver time per step. Each panel's first line holds the data."""
    from matplotlib.figure import Figure

    panels = []
    if series.potential_ev is not None:
        panels.append(("potential energy (eV)", series.steps, series.potential_ev))
    if series.temperature_k is not None:
        panels.append(("temperature (K)", series.steps, series.temperature_k))
    drift = series.drift_mev()
    if drift is not None:
        per = "meV/atom" if series.atoms else "meV"
        panels.append((f"conserved-quantity drift ({per})", series.steps, drift))
    if series.driver_ms is not None:
        panels.append(("driver time per step (ms)", series.driver_steps, series.driver_ms))
    if not panels:
        raise RunDataError(f"{series.source}: none of potential, temperature, conserved or "
                           "driver timings recorded")
    fig = Figure(figsize=(7, 2.2 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (label, x, y) in zip(axes, panels):
        ax.plot(x, y, lw=1.2)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if label.startswith("temperature") and series.target_k is not None:
            ax.axhline(series.target_k, color="C3", ls="--", lw=1,
                       label=f"target {series.target_k:g} K")
            ax.legend(loc="best")
        ax.set_xlabel("driver forward pass" if label.startswith("driver") else "MD step")
    fig.suptitle(Path(series.source).name)
    return fig


def write_png(series: RunSeries, path: str | os.PathLike) -> Path:
    """:func:`figure` saved as a PNG at ``path``; returns the path."""
    path = Path(path)
    figure(series).savefig(path, dpi=110)
    return path
