"""Energy conservation of the demo model: an NVE run of a CuAu alloy with ASE.

Velocity Verlet with :class:`umadrive.UMACalculator`; the drift is the slope of a
least-squares line through the total energy, per atom, in meV/atom/ps. The
model card's NVE row comes from :func:`measure_nve` (called by
``tools/train_demo_model.py``); run this file to measure it again::

    python tools/demo_nve.py [--model demo] [--steps 1000] [--dtype float32]

Prints a markdown table and the result as JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator
from ase.md.verlet import VelocityVerlet


def cuau_alloy(repeat: int, seed: int) -> Atoms:
    """Random 50:50 CuAu on an fcc lattice, ``4 * repeat**3`` atoms, at the mean of
    the Cu and Au lattice constants (3.61 and 4.08 Å)."""
    atoms = bulk("Cu", "fcc", a=(3.61 + 4.08) / 2, cubic=True).repeat(repeat)
    symbols = np.array(["Cu", "Au"] * (len(atoms) // 2))
    np.random.default_rng(seed).shuffle(symbols)
    atoms.set_chemical_symbols(list(symbols))
    return atoms


def energy_drift(times_ps: np.ndarray, energies_eV: np.ndarray, n_atoms: int) -> float:
    """Slope of the least-squares line through the total energy, meV/atom/ps."""
    slope, _ = np.polyfit(times_ps, energies_eV, 1)
    return 1000.0 * float(slope) / n_atoms


def measure_nve(calculator: Calculator, *, repeat: int = 2, temperature_K: float = 600.0,
                timestep_fs: float = 1.0, steps: int = 1000, seed: int = 7) -> dict:
    """Run NVE from Maxwell-Boltzmann velocities at ``temperature_K`` (the
    system equilibrates near half of it) and report energy conservation.

    Returns atoms, steps, timestep_fs, temperature_K (initial), mean_temperature_K,
    drift_meV_per_atom_per_ps, max_deviation_meV_per_atom (largest |E(t) - E(0)|),
    seconds.
    """
    atoms = cuau_alloy(repeat, seed)
    rng = np.random.default_rng(seed)
    thermal_momentum = np.sqrt(atoms.get_masses() * units.kB * temperature_K)
    momenta = rng.normal(size=(len(atoms), 3)) * thermal_momentum[:, None]
    atoms.set_momenta(momenta - momenta.mean(axis=0))  # no centre-of-mass drift
    atoms.calc = calculator

    dynamics = VelocityVerlet(atoms, timestep_fs * units.fs)
    energies, temperatures = [], []

    def record() -> None:
        energies.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
        temperatures.append(atoms.get_temperature())

    dynamics.attach(record, interval=1)
    start = time.perf_counter()
    record()
    dynamics.run(steps)
    seconds = time.perf_counter() - start

    energies_eV = np.array(energies)
    times_ps = np.arange(len(energies_eV)) * timestep_fs / 1000.0
    return {
        "atoms": len(atoms),
        "steps": steps,
        "timestep_fs": timestep_fs,
        "temperature_K": temperature_K,
        "mean_temperature_K": float(np.mean(temperatures[len(temperatures) // 2:])),
        "drift_meV_per_atom_per_ps": energy_drift(times_ps, energies_eV, len(atoms)),
        "max_deviation_meV_per_atom": 1000.0 * float(np.max(np.abs(energies_eV - energies_eV[0])))
        / len(atoms),
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="model name or checkpoint path")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2, help="cubic fcc cells per edge")
    parser.add_argument("--timestep-fs", type=float, default=1.0)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from umadrive import InferenceSettings, UMACalculator, get_predict_unit

    torch.set_num_threads(args.threads)
    settings = InferenceSettings(base_precision_dtype=getattr(torch, args.dtype))
    calculator = UMACalculator(get_predict_unit(args.model, inference_settings=settings))
    result = measure_nve(calculator, repeat=args.repeat, steps=args.steps,
                         timestep_fs=args.timestep_fs)
    result["dtype"] = args.dtype

    print("| atoms | steps | dt (fs) | dtype | mean T (K) | drift (meV/atom/ps) | max |ΔE| (meV/atom) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {result['atoms']} | {result['steps']} | {result['timestep_fs']} | {args.dtype} "
          f"| {result['mean_temperature_K']:.0f} | {result['drift_meV_per_atom_per_ps']:.3f} "
          f"| {result['max_deviation_meV_per_atom']:.3f} |")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
