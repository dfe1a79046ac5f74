"""Write tiny official-format UMA checkpoints and fairchem-core's float64 answers on them.

Run in the oracle venv (fairchem-core 2.24.0), from the repository root::

    .oracle/bin/python tools/make_reference_fixtures.py            # tests/data/
    .oracle/bin/python tools/make_reference_fixtures.py \
        --benchmark-checkpoint /tmp/uma-s-random.pt                          # UMA-S-sized, not committed

What it writes (see ``tests/data/README.md``):

* ``uma_<name>.pt``: a pickled ``MLIPInferenceCheckpoint`` exactly as fairchem's
  ``convert_train_checkpoint_to_inference_checkpoint`` writes one: OmegaConf
  ``model_config`` and ``tasks_config``, a plain ``model_state_dict`` and an
  ``AveragedModel`` ``ema_state_dict`` (``module.`` prefix, ``n_averaged``).
  Weights are random but non-trivial: every parameter is re-drawn, including the
  ones fairchem initialises at or near zero/one (source/target embeddings, norm
  scales and biases, SO3 linear biases); element references are non-zero and
  the normaliser has ``rmsd != 1`` and a non-zero energy mean.
* ``uma_<name>_reference.npz``: the oracle's float64 energy, forces and stress
  for the six structures of :func:`structures`, plus the structures themselves.

UMA 1.0 files carry neither ``model_id`` nor ``backbone.model_version``;
fairchem >= 2.22 refuses to load them. Its only 1.0-specific behaviour is the
composition mean taken with ``include_self=True`` (sum / (n + 1)), which 2.24
applies for ``model_id == "UMA-S-1.2"``; the references for the 1.0 file are
therefore computed from a temporary copy tagged that way (nothing else in
fairchem 2.24 reads ``model_id``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from omegaconf import OmegaConf

from fairchem.core.datasets.atomic_data import AtomicData, atomicdata_list_to_batch
from fairchem.core.models.base import HydraModel
from fairchem.core.units.mlip_unit.api.inference import (
    InferenceSettings,
    MLIPInferenceCheckpoint,
)
from fairchem.core.units.mlip_unit.predict import MLIPPredictUnit

DATASETS = ["oc20", "omol", "omat", "odac", "omc"]
BACKBONE = "fairchem.core.models.uma.escn_moe.eSCNMDMoeBackbone"


def model_config(*, channels: int, lmax: int, mmax: int, layers: int, experts: int,
                 basis: int, cutoff: float, max_neighbors: int, version: float | None) -> dict:
    backbone = dict(
        model=BACKBONE, moe_dropout=0.0, num_experts=experts,
        use_composition_embedding=True, max_num_elements=100,
        sphere_channels=channels, lmax=lmax, mmax=mmax, otf_graph=True,
        max_neighbors=max_neighbors, cutoff=cutoff, edge_channels=channels,
        distance_function="gaussian", num_distance_basis=basis,
        regress_forces=True, regress_stress=True, direct_forces=False,
        num_layers=layers, hidden_channels=channels, norm_type="rms_norm_sh",
        act_type="gate", ff_type="spectral", chg_spin_emb_type="rand_emb",
        cs_emb_grad=True, dataset_list=list(DATASETS),
    )
    if version is not None:
        backbone["model_version"] = version
    return dict(
        _target_="fairchem.core.models.base.HydraModel",
        backbone=backbone,
        heads=dict(energyandforcehead=dict(
            module="fairchem.core.models.uma.escn_moe.DatasetSpecificSingleHeadWrapper",
            head_cls="fairchem.core.models.uma.escn_md.MLP_EFS_Head",
            head_kwargs=dict(wrap_property=False),
            dataset_names=["omol", "omat", "oc20", "omc", "odac"],
        )),
        pass_through_head_outputs=True,
    )


# name -> (config kwargs, seed). Every size differs from UMA-S so that nothing
# fixed to S can pass.
FIXTURES = {
    "s1p1": (dict(channels=8, lmax=2, mmax=2, layers=2, experts=3, basis=10,
                  cutoff=6.0, max_neighbors=40, version=1.1), 11),
    "m1p1": (dict(channels=6, lmax=4, mmax=2, layers=2, experts=2, basis=12,
                  cutoff=5.0, max_neighbors=30, version=1.1), 12),
    "s1p0": (dict(channels=8, lmax=2, mmax=1, layers=1, experts=4, basis=8,
                  cutoff=5.5, max_neighbors=36, version=None), 13),
}
UMA_S = dict(channels=128, lmax=2, mmax=2, layers=4, experts=32, basis=64,
             cutoff=6.0, max_neighbors=300, version=1.1)


def randomise(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Re-draw every parameter so that no layer is trivial (zero, one or tiny)."""

    def draw(shape, scale, offset=0.0):
        return offset + scale * torch.randn(shape, generator=generator)

    with torch.no_grad():
        for module_name, module in model.named_modules():
            for name, param in module.named_parameters(recurse=False):
                full = f"{module_name}.{name}"
                if isinstance(module, torch.nn.Embedding):
                    param.copy_(draw(param.shape, 0.7))
                elif name == "affine_weight" or (isinstance(module, torch.nn.LayerNorm)
                                                 and name == "weight"):
                    param.copy_(draw(param.shape, 0.25, 1.0))
                elif param.ndim == 1:
                    param.copy_(draw(param.shape, 0.2))
                else:
                    fan_in = param.shape[-1]
                    param.copy_(draw(param.shape, 1.1 / math.sqrt(fan_in)))
                if not torch.isfinite(param).all():
                    raise RuntimeError(f"non-finite parameter {full}")


def tasks_config(generator: torch.Generator) -> list:
    """Energy/forces/stress tasks per dataset; rmsd != 1, non-zero energy mean and refs."""
    rmsd = 1.37
    tasks = []
    for dataset in DATASETS:
        refs = (torch.randn(101, generator=generator, dtype=torch.float64) * 2.0 - 3.0)
        refs[0] = 0.0
        for prop, mean in (("energy", 0.31), ("forces", 0.0), ("stress", 0.0)):
            if prop == "stress" and dataset == "omol":
                continue  # as in the released models: no stress task for molecules
            task = dict(
                _target_="fairchem.core.units.mlip_unit.mlip_unit.Task",
                name=f"{dataset}_{prop}",
                level="system" if prop != "forces" else "atom",
                property=prop,
                out_spec=dict(_target_="fairchem.core.units.mlip_unit.mlip_unit.OutputSpec",
                              dim=[1] if prop == "energy" else ([3] if prop == "forces" else [1, 9]),
                              dtype="float32"),
                normalizer=dict(_target_="fairchem.core.modules.normalization.normalizer.Normalizer",
                                mean=mean, rmsd=rmsd),
                datasets=[dataset],
                metrics=["mae"],
                train_on_free_atoms=True,
                eval_on_free_atoms=True,
            )
            if prop == "energy":
                task["element_references"] = dict(
                    _target_="fairchem.core.modules.normalization.element_references.ElementReferences",
                    element_references=dict(_target_="torch.DoubleTensor",
                                            _args_=[[float(v) for v in refs]]),
                )
            tasks.append(task)
    return tasks


def make_checkpoint(path: Path, config_kwargs: dict, seed: int) -> None:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    config = model_config(**config_kwargs)
    model = HydraModel(**{k: v for k, v in copy.deepcopy(config).items() if k != "_target_"})
    randomise(model, generator)
    ema = torch.optim.swa_utils.AveragedModel(model)
    checkpoint = MLIPInferenceCheckpoint(
        model_config=OmegaConf.create(config),
        model_state_dict=model.state_dict(),
        ema_state_dict=ema.state_dict(),
        tasks_config=OmegaConf.create(tasks_config(generator)),
    )
    torch.save(checkpoint, path)


def structures() -> list[tuple[str, Atoms, str]]:
    """The six structures of issue 3: (label, atoms with charge/spin in info, task)."""
    rng = np.random.default_rng(7)
    out = []

    mol = molecule("CH3CH2OH")
    mol.positions += rng.normal(0, 0.05, mol.positions.shape)
    mol.info.update(charge=0, spin=1)
    out.append(("molecule", mol, "omol"))

    cation = molecule("NH3")
    cation.positions += rng.normal(0, 0.05, cation.positions.shape)
    cation.info.update(charge=1, spin=2)
    out.append(("charged_open_shell", cation, "omol"))

    prim = bulk("Si", "diamond", a=5.43)
    prim.positions += rng.normal(0, 0.05, prim.positions.shape)
    out.append(("primitive_2_atoms", prim, "omat"))

    alloy = bulk("Cu", "fcc", a=3.62, cubic=True)
    alloy.set_chemical_symbols(["Cu", "Au", "Ni", "Cu"])
    alloy.set_cell(alloy.cell.array @ np.array([[1.0, 0.0, 0.0], [0.17, 1.04, 0.0],
                                                [-0.11, 0.23, 0.97]]), scale_atoms=True)
    alloy.positions += rng.normal(0, 0.05, alloy.positions.shape)
    out.append(("triclinic_alloy", alloy, "omat"))

    slab = fcc111("Pt", size=(2, 2, 3), vacuum=5.0)
    slab.append("O")
    slab.positions[-1] = slab.positions[-2] + [0.0, 0.0, 1.9]
    slab.positions += rng.normal(0, 0.03, slab.positions.shape)
    slab.pbc = (True, True, False)
    out.append(("slab_ttf", slab, "oc20"))

    crowded = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    crowded.positions[5] += [0.12, -0.07, 0.05]  # break the symmetry, keep the shell ties
    out.append(("over_max_neighbors", crowded, "omat"))
    return out


def oracle_unit(path: Path) -> MLIPPredictUnit:
    settings = InferenceSettings(tf32=False, activation_checkpointing=False, merge_mole=False,
                                 compile=False, external_graph_gen=False,
                                 internal_graph_gen_version=2,
                                 base_precision_dtype=torch.float64)
    return MLIPPredictUnit(str(path), device="cpu", inference_settings=settings)


def oracle_answer(unit: MLIPPredictUnit, atoms: Atoms, task: str) -> dict:
    data = AtomicData.from_ase(atoms, task_name=task, r_edges=False,
                               r_data_keys=["charge", "spin"], target_dtype=torch.float64)
    batch = atomicdata_list_to_batch([data])
    out = unit.predict(batch)
    answer = {
        "energy": float(out["energy"].reshape(-1)[0]),
        "forces": out["forces"].detach().double().numpy().reshape(-1, 3),
    }
    if "stress" in out and abs(np.linalg.det(atoms.cell.array)) > 0:
        answer["stress"] = out["stress"].detach().double().numpy().reshape(3, 3)
    return answer


def write_references(checkpoint: Path, out: Path, tag_as_1p0: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = checkpoint
        if tag_as_1p0:
            source = Path(tmp) / "tagged.pt"
            ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
            ckpt.model_config["model_id"] = "UMA-S-1.2"  # fairchem 2.24: include_self=True
            torch.save(ckpt, source)
        unit = oracle_unit(source)
        arrays, index = {}, []
        for label, atoms, task in structures():
            answer = oracle_answer(unit, atoms, task)
            arrays[f"{label}/numbers"] = atoms.numbers
            arrays[f"{label}/positions"] = atoms.positions
            arrays[f"{label}/cell"] = atoms.cell.array
            arrays[f"{label}/pbc"] = atoms.pbc
            arrays[f"{label}/energy"] = np.array(answer["energy"])
            arrays[f"{label}/forces"] = answer["forces"]
            if "stress" in answer:
                arrays[f"{label}/stress"] = answer["stress"]
            index.append(dict(label=label, task=task, charge=int(atoms.info.get("charge", 0)),
                              spin=int(atoms.info.get("spin", 0)), n_atoms=len(atoms)))
        arrays["index"] = np.array(json.dumps(index))
        np.savez_compressed(out, **arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("tests/data"))
    parser.add_argument("--benchmark-checkpoint", type=Path,
                        help="write only a UMA-S-sized random checkpoint here (not committed)")
    args = parser.parse_args()
    if args.benchmark_checkpoint:
        make_checkpoint(args.benchmark_checkpoint, UMA_S, seed=5)
        print(f"wrote {args.benchmark_checkpoint}")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (kwargs, seed) in FIXTURES.items():
        path = args.out / f"uma_{name}.pt"
        make_checkpoint(path, kwargs, seed)
        write_references(path, args.out / f"uma_{name}_reference.npz",
                         tag_as_1p0=kwargs["version"] is None)
        print(f"wrote {path} and its references")


if __name__ == "__main__":
    main()
