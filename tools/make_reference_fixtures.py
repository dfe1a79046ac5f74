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
  for the structures of :func:`structures` (UMA 1.0/1.1) or
  :func:`structures_1p2` (UMA 1.2/1.2.1, one or more per task), plus the
  structures themselves.

UMA 1.2 and 1.2.1 files follow ``scripts/uma_1p2_surgery.py`` and
``uma_1p2p1_surgery.py``: ``model_id`` and ``supports_single_atoms`` at the top,
``dataset_mapping`` in backbone and head, the head a ``DatasetSpecificMoEWrapper``.
``uma_s1p2.pt`` is shaped like the surgery's stage 1 (``omat_rattle`` maps to
``omat``: several names, one embedding and head expert; eight head-expert slots
for seven distinct targets); ``uma_s1p2p1.pt`` like its stage 2 (``omat_rattle``
removed, head weights sliced to seven experts, so they are views of a larger
storage as in the released files), with charge and spin balanced channels. In
both the raw ``model_state_dict`` differs from the EMA weights. The 1.2.1 file's
weights are also evaluated tagged ``model_id = "UMA-S-1.2"``
(``uma_s1p2p1_as_1p2_reference.npz``): the same weights under the 1.2 quirk.

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
DATASETS_1P2 = ["oc20", "oc22", "oc25", "omol", "omat", "odac", "omc"]
STRESS_DATASETS_1P2 = ("omat", "omc")  # the others get autograd stress at load (fairchem)
BACKBONE = "fairchem.core.models.uma.escn_moe.eSCNMDMoeBackbone"


def backbone_config(*, channels: int, lmax: int, mmax: int, layers: int, experts: int,
                    basis: int, cutoff: float, max_neighbors: int) -> dict:
    """The backbone keys that every UMA release shares."""
    return dict(
        model=BACKBONE, moe_dropout=0.0, num_experts=experts,
        use_composition_embedding=True, max_num_elements=100,
        sphere_channels=channels, lmax=lmax, mmax=mmax, otf_graph=True,
        max_neighbors=max_neighbors, cutoff=cutoff, edge_channels=channels,
        distance_function="gaussian", num_distance_basis=basis,
        regress_forces=True, regress_stress=True, direct_forces=False,
        num_layers=layers, hidden_channels=channels, norm_type="rms_norm_sh",
        act_type="gate", ff_type="spectral", chg_spin_emb_type="rand_emb",
        cs_emb_grad=True,
    )


def model_config(*, version: float | None = None, model_id: str | None = None,
                 mapping: dict | None = None, charge_channels: list | None = None,
                 spin_channels: list | None = None, **sizes) -> dict:
    """A UMA 1.0/1.1 config (``version``), or a 1.2-style one (``model_id``);
    ``sizes``: the keyword arguments of :func:`backbone_config`."""
    if model_id is not None:
        return model_config_1p2(model_id=model_id, mapping=mapping,
                                charge_channels=charge_channels,
                                spin_channels=spin_channels, **sizes)
    backbone = {**backbone_config(**sizes), "dataset_list": list(DATASETS)}
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


def model_config_1p2(*, model_id: str, mapping: dict, charge_channels: list | None,
                     spin_channels: list | None, **sizes) -> dict:
    """A UMA 1.2-style config, with the leftover training keys the surgery keeps."""
    backbone = {**backbone_config(**sizes), "dataset_mapping": dict(mapping), "use_pbc": True,
                "moe_layer_type": "pytorch", "charge_balanced_channels": charge_channels,
                "spin_balanced_channels": spin_channels}
    return dict(
        _target_="fairchem.core.models.base.HydraModel",
        backbone=backbone,
        heads=dict(energyandforcehead=dict(
            module="fairchem.core.models.uma.escn_moe.DatasetSpecificMoEWrapper",
            head_cls="fairchem.core.models.uma.escn_md.MLP_EFS_Head",
            head_kwargs=dict(wrap_property=False),
            dataset_mapping=dict(mapping),
        )),
        pass_through_head_outputs=True,
        supports_single_atoms=True,
        model_id=model_id,
    )


STAGE1_MAPPING = {**{name: name for name in DATASETS_1P2}, "omat_rattle": "omat"}

# name -> (config kwargs, seed). Every size differs from UMA-S so that nothing
# fixed to S can pass.
FIXTURES = {
    "s1p1": (dict(channels=8, lmax=2, mmax=2, layers=2, experts=3, basis=10,
                  cutoff=6.0, max_neighbors=40, version=1.1), 11),
    "m1p1": (dict(channels=6, lmax=4, mmax=2, layers=2, experts=2, basis=12,
                  cutoff=5.0, max_neighbors=30, version=1.1), 12),
    "s1p0": (dict(channels=8, lmax=2, mmax=1, layers=1, experts=4, basis=8,
                  cutoff=5.5, max_neighbors=36, version=None), 13),
    "s1p2": (dict(channels=6, lmax=2, mmax=1, layers=2, experts=3, basis=9,
                  cutoff=5.5, max_neighbors=34, model_id="UMA-S-1.2",
                  mapping=STAGE1_MAPPING), 14),
    "s1p2p1": (dict(channels=8, lmax=2, mmax=2, layers=2, experts=4, basis=11,
                    cutoff=6.0, max_neighbors=40, model_id="UMA-S-1.2.1",
                    mapping=STAGE1_MAPPING, charge_channels=[0, 1, 2],
                    spin_channels=[3, 4]), 15),
}
#: Fixtures made like the second surgery stage: ``omat_rattle`` removed after building.
STAGE2 = {"s1p2p1"}
UMA_S = dict(channels=128, lmax=2, mmax=2, layers=4, experts=32, basis=64,
             cutoff=6.0, max_neighbors=300, version=1.1)
#: UMA-S-1.2.1's sizes (distance basis 32; 64 experts is inferred from its parameter
#: count, ~291M); the charge channels as in its config.
UMA_S_1P2P1 = dict(channels=128, lmax=2, mmax=2, layers=4, experts=64, basis=32,
                   cutoff=6.0, max_neighbors=300, model_id="UMA-S-1.2.1",
                   mapping=STAGE1_MAPPING, charge_channels=[0, 1, 2], spin_channels=None)
BENCHMARK_SIZES = {"1.1": UMA_S, "1.2.1": UMA_S_1P2P1}


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


def tasks_config(generator: torch.Generator, datasets: list[str] = DATASETS,
                 stress_datasets: tuple[str, ...] | None = None) -> list:
    """Energy/forces/stress tasks per dataset; rmsd != 1, non-zero energy mean and refs.
    Stress tasks for ``stress_datasets`` (None: all but omol)."""
    rmsd = 1.37
    tasks = []
    for dataset in datasets:
        refs = (torch.randn(101, generator=generator, dtype=torch.float64) * 2.0 - 3.0)
        refs[0] = 0.0
        for prop, mean in (("energy", 0.31), ("forces", 0.0), ("stress", 0.0)):
            if prop == "stress" and (dataset == "omol" if stress_datasets is None
                                     else dataset not in stress_datasets):
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


def make_checkpoint(path: Path, config_kwargs: dict, seed: int, *,
                    stage2: bool = False) -> None:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    config = model_config(**config_kwargs)
    model = HydraModel(**{k: v for k, v in copy.deepcopy(config).items() if k != "_target_"})
    randomise(model, generator)
    ema = torch.optim.swa_utils.AveragedModel(model)
    if "model_id" in config:
        mapping = config["backbone"]["dataset_mapping"]
        tasks = tasks_config(generator, list(mapping), STRESS_DATASETS_1P2)
        randomise(model, generator)  # the raw weights differ from the EMA ones
    else:
        tasks = tasks_config(generator)
    checkpoint = MLIPInferenceCheckpoint(
        model_config=OmegaConf.create(config),
        model_state_dict=model.state_dict(),
        ema_state_dict=ema.state_dict(),
        tasks_config=OmegaConf.create(tasks),
    )
    if stage2:
        remove_extra_dataset(checkpoint, "omat_rattle")
    torch.save(checkpoint, path)


def remove_extra_dataset(checkpoint: MLIPInferenceCheckpoint, name: str) -> None:
    """What the second stage of fairchem's 1.2/1.2.1 surgery does to ``name``: drop it
    from the mappings, its embedding and tasks; keep the first n head-expert slots
    (slices, so the saved tensors are views of the larger storage)."""
    config = checkpoint.model_config
    mapping = {key: value for key, value in config.backbone.dataset_mapping.items()
               if key != name}
    config.backbone.dataset_mapping = mapping
    config.heads.energyandforcehead.dataset_mapping = mapping
    key = f"backbone.dataset_embedding.dataset_emb_dict.{name}.weight"
    del checkpoint.model_state_dict[key]
    del checkpoint.ema_state_dict["module." + key]
    for layer in (0, 2, 4):
        key = f"output_heads.energyandforcehead.head.energy_block.{layer}.weights"
        checkpoint.model_state_dict[key] = checkpoint.model_state_dict[key][:len(mapping)]
        checkpoint.ema_state_dict["module." + key] = (
            checkpoint.ema_state_dict["module." + key][:len(mapping)])
    checkpoint.tasks_config = OmegaConf.create(
        [task for task in checkpoint.tasks_config if name not in task.datasets])


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


def structures_1p2(datasets: list[str]) -> list[tuple[str, Atoms, str]]:
    """At least one structure per task of a UMA 1.2 model (``datasets``): a charged
    open-shell molecule (omol), slabs with pbc (T, T, F) (oc20, oc22, oc25), a
    triclinic alloy (omat, and omat_rattle where the model has it), a molecular
    crystal (omc), a gas in a periodic box (odac) and a single isolated atom (omol)."""
    rng = np.random.default_rng(8)

    def rattle(atoms: Atoms, scale: float) -> Atoms:
        atoms.positions += rng.normal(0, scale, atoms.positions.shape)
        return atoms

    def neutral(atoms: Atoms) -> Atoms:
        atoms.info.update(charge=0, spin=0)
        return atoms

    out = []
    cation = rattle(molecule("NH3"), 0.05)
    cation.info.update(charge=1, spin=2)
    out.append(("charged_open_shell", cation, "omol"))

    slab = fcc111("Pt", size=(2, 2, 2), vacuum=5.0)
    slab.append("O")
    slab.positions[-1] = slab.positions[-2] + [0.0, 0.0, 1.9]
    slab.pbc = (True, True, False)
    out.append(("slab_oc20", neutral(rattle(slab, 0.03)), "oc20"))

    oxide = bulk("MgO", "rocksalt", a=4.21, cubic=True)
    oxide.center(vacuum=5.0, axis=2)
    oxide.pbc = (True, True, False)
    out.append(("slab_oc22", neutral(rattle(oxide, 0.04)), "oc22"))

    wet = fcc111("Cu", size=(2, 2, 2), vacuum=6.0)
    water = molecule("H2O")
    water.translate(wet.positions[-1] + [0.5, 0.3, 2.3])
    wet += water
    wet.pbc = (True, True, False)
    out.append(("slab_oc25", neutral(rattle(wet, 0.03)), "oc25"))

    alloy = bulk("Cu", "fcc", a=3.62, cubic=True)
    alloy.set_chemical_symbols(["Cu", "Au", "Ni", "Cu"])
    alloy.set_cell(alloy.cell.array @ np.array([[1.0, 0.0, 0.0], [0.17, 1.04, 0.0],
                                                [-0.11, 0.23, 0.97]]), scale_atoms=True)
    alloy = neutral(rattle(alloy, 0.05))
    out.append(("triclinic_alloy", alloy, "omat"))
    if "omat_rattle" in datasets:
        out.append(("triclinic_alloy_rattle", alloy.copy(), "omat_rattle"))

    crystal = molecule("HCOOH")
    second = molecule("HCOOH")
    second.rotate(180, "z")
    second.translate([2.6, 1.9, 1.6])
    crystal += second
    crystal.set_cell([[5.2, 0.0, 0.0], [0.4, 4.6, 0.0], [0.3, -0.2, 4.9]])
    crystal.pbc = True
    out.append(("molecular_crystal", neutral(rattle(crystal, 0.04)), "omc"))

    gas = molecule("CO2")
    gas += molecule("H2O")
    gas.positions[-3:] += [2.4, 1.5, 0.7]
    gas.set_cell([5.5, 5.8, 6.1])
    gas.pbc = True
    out.append(("gas_in_box", neutral(rattle(gas, 0.04)), "odac"))

    atom = Atoms("O", positions=[[0.1, -0.2, 0.3]])
    atom.info.update(charge=0, spin=3)
    out.append(("single_atom", atom, "omol"))
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


def write_references(checkpoint: Path, out: Path, tag_as_1p2: bool) -> None:
    """The oracle's answers on ``checkpoint``; ``tag_as_1p2``: on a copy tagged
    ``model_id = "UMA-S-1.2"`` (fairchem 2.24: composition mean with include_self)."""
    with tempfile.TemporaryDirectory() as tmp:
        source = checkpoint
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if tag_as_1p2:
            source = Path(tmp) / "tagged.pt"
            ckpt.model_config["model_id"] = "UMA-S-1.2"
            torch.save(ckpt, source)
        mapping = ckpt.model_config["backbone"].get("dataset_mapping")
        cases = structures_1p2(list(mapping)) if mapping else structures()
        unit = oracle_unit(source)
        arrays, index = {}, []
        for label, atoms, task in cases:
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
    parser.add_argument("--only", nargs="+", choices=sorted(FIXTURES),
                        help="rewrite only these fixtures (default: all)")
    parser.add_argument("--benchmark-checkpoint", type=Path,
                        help="write only a UMA-S-sized random checkpoint here (not committed)")
    parser.add_argument("--benchmark-version", choices=sorted(BENCHMARK_SIZES), default="1.1",
                        help="the UMA-S release whose sizes and format the benchmark "
                             "checkpoint has (default 1.1)")
    args = parser.parse_args()
    if args.benchmark_checkpoint:
        sizes = BENCHMARK_SIZES[args.benchmark_version]
        make_checkpoint(args.benchmark_checkpoint, sizes, seed=5,
                        stage2="model_id" in sizes)
        print(f"wrote {args.benchmark_checkpoint}")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (kwargs, seed) in FIXTURES.items():
        if args.only and name not in args.only:
            continue
        path = args.out / f"uma_{name}.pt"
        make_checkpoint(path, kwargs, seed, stage2=name in STAGE2)
        # fairchem >= 2.22 refuses UMA 1.0; its only 1.0 behaviour is 1.2's quirk
        write_references(path, args.out / f"uma_{name}_reference.npz",
                         tag_as_1p2="model_id" not in kwargs and kwargs.get("version") is None)
        if kwargs.get("model_id") == "UMA-S-1.2.1":
            write_references(path, args.out / f"uma_{name}_as_1p2_reference.npz",
                             tag_as_1p2=True)
        print(f"wrote {path} and its references")


if __name__ == "__main__":
    main()
