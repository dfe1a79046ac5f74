"""Inductor's real code generation and the kernel cache across processes:
``umadrive compile`` fills the cache once (checking a batch of 3 without a
recompile); then 4 processes started at once on the same cache load the
precompiled model, trace nothing (dynamo and AOTAutograd: torch's counters),
generate no code and answer as the uncompiled model does. Three share
inductor's folder under the cache, as ``umadrive serve`` does; one has an empty
inductor folder of its own, so only umadrive's entry can spare it the tracing
and code generation (it still runs the C++ compiler on the stored source). One
inductor code generation in all (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import ase.io
import numpy as np
import pytest
import torch

from umadrive.model import InferenceSettings, System, get_predict_unit
from umadrive.structure import Structure
from umadrive.testing import tolerance

from tests.model.helpers import checkpoint_path

ROOT = checkpoint_path("s1p0").parents[2]

#: One start: load turbo (float32), warm up with the cache, answer one step; JSON out.
START = """
import json, sys
import ase.io, numpy as np, torch
from umadrive.model import InferenceSettings, System, get_predict_unit
from umadrive.model.compile_cache import KernelCache
from umadrive.structure import Structure
atoms = ase.io.read(sys.argv[1])
unit = get_predict_unit(sys.argv[2], inference_settings="turbo")
system = System(numbers=atoms.numbers, structure=Structure.from_atoms(atoms), task="omat",
                charge=0, spin=0)
warm_up = unit.warm_up([system], cache=KernelCache())
with torch.compiler.set_stance("fail_on_recompile"):
    answers = unit.predict([system] * 2)
counters = torch._dynamo.utils.counters
print(json.dumps({"cache_hit": warm_up.cache_hit, "stored": warm_up.stored,
                  "inductor_misses": counters["inductor"]["fxgraph_cache_miss"],
                  "frames_traced": counters["frames"]["total"],
                  "aot_graphs": counters["aot_autograd"]["total"],
                  "energies": [a.energy for a in answers],
                  "forces": [a.forces.tolist() for a in answers]}))
"""


def _env(tmp_path, inductor: str | None = None) -> dict:
    """``umadrive``'s commands put inductor's folder under the cache unless it is set."""
    env = {key: value for key, value in os.environ.items() if key != "TORCHINDUCTOR_CACHE_DIR"}
    if inductor is not None:
        env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / inductor)
    return {**env, "UMADRIVE_CACHE": str(tmp_path / "cache"),
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                          if p)}


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_compiled_once_then_four_concurrent_starts_reuse_the_kernels(tmp_path):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=1)
    structure = tmp_path / "cu.extxyz"
    ase.io.write(structure, atoms)
    model = str(checkpoint_path("s1p0"))

    compiled = subprocess.run(
        [sys.executable, "-m", "umadrive", "compile", "--model", model, "--structure",
         str(structure), "--task", "omat", "--batch", "3"],
        env=_env(tmp_path), capture_output=True, text=True, timeout=2000)
    assert compiled.returncode == 0, compiled.stderr
    assert "cached for next time in" in compiled.stderr
    assert "a batch of 3 structures" in compiled.stderr and "no recompile" in compiled.stderr
    assert (tmp_path / "cache" / "inductor").is_dir()
    entries = sorted((tmp_path / "cache" / "compiled").iterdir())
    assert len(entries) == 1 and entries[0].suffix == ".bin"
    stored = entries[0].read_bytes()

    starts = [subprocess.Popen([sys.executable, "-c", START, str(structure), model],
                               env=_env(tmp_path, "cache/inductor" if index else "own-inductor"),
                               stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for index in range(4)]
    results = []
    for start in starts:
        out, err = start.communicate(timeout=2000)
        assert start.returncode == 0, err
        results.append(json.loads(out.splitlines()[-1]))

    eager = get_predict_unit(model, inference_settings=InferenceSettings(
        activation_checkpointing=False, merge_mole=True))
    system = System(numbers=atoms.numbers, structure=Structure.from_atoms(atoms), task="omat",
                    charge=0, spin=0)
    expected = eager.predict([system])[0]
    tol = tolerance(torch.float32)
    for result in results:
        # the entry was loaded: nothing traced, no code generated, nothing stored
        assert result["cache_hit"] and not result["stored"], result
        assert result["frames_traced"] == result["aot_graphs"] == 0, result
        assert result["inductor_misses"] == 0, result
        for energy, forces in zip(result["energies"], result["forces"]):
            assert abs(energy - expected.energy) / len(atoms) <= tol.energy_per_atom
            np.testing.assert_allclose(forces, expected.forces, rtol=0, atol=tol.forces)
    assert sorted((tmp_path / "cache" / "compiled").iterdir()) == entries
    assert (tmp_path / "cache" / "compiled" / entries[0].name).read_bytes() == stored
