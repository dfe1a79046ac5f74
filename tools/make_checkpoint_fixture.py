"""Write a tiny fairchem-format UMA checkpoint and what fairchem reads from it.

Run in the oracle venv (fairchem-core 2.24.0), from the repository root:

    /path/to/oracle/bin/python tools/make_checkpoint_fixture.py

Writes ``tests/data/ckpt_tiny_fairchem.pt`` the way fairchem's training writes a
release checkpoint (``convert_train_checkpoint_to_inference_checkpoint``): a
``MLIPInferenceCheckpoint`` pickled by ``torch.save``, whose ``model_config`` and
``tasks_config`` are OmegaConf nodes of the resolved job config (so the pickle
carries the whole config tree through the nodes' parents) and whose
``ema_state_dict`` comes from ``torch.optim.swa_utils.AveragedModel``.

Also writes ``tests/data/ckpt_tiny_fairchem.json``: what fairchem itself reads
back (``torch.load(weights_only=False)``, OmegaConf's ``to_container``, hydra's
task instantiation), for umadrive's tests to compare against.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import hydra
import torch
from fairchem.core.units.mlip_unit.api.inference import MLIPInferenceCheckpoint
from fairchem.core.units.mlip_unit.utils import load_inference_model, load_tasks
from omegaconf import OmegaConf

OUT = Path(__file__).resolve().parents[1] / "tests" / "data"
DATASETS = ["omat", "omol"]
N_ELEMENTS = 101


def job_config(element_references: dict[str, list[float]]) -> dict:
    backbone = {
        "model": "fairchem.core.models.uma.escn_moe.eSCNMDMoeBackbone",
        "model_version": 1.1,
        "num_experts": 2,
        "moe_dropout": 0.0,
        "use_composition_embedding": True,
        "max_num_elements": 100,
        "sphere_channels": 8,
        "lmax": 1,
        "mmax": 1,
        "otf_graph": True,
        "max_neighbors": 30,
        "cutoff": 5.0,
        "edge_channels": 8,
        "distance_function": "gaussian",
        "num_distance_basis": 8,
        "regress_forces": True,
        "regress_stress": True,
        "direct_forces": False,
        "num_layers": 1,
        "hidden_channels": 8,
        "norm_type": "rms_norm_sh",
        "act_type": "gate",
        "ff_type": "spectral",
        "chg_spin_emb_type": "rand_emb",
        "cs_emb_grad": True,
        "dataset_list": DATASETS,
    }
    heads = {
        "energyandforcehead": {
            "module": "fairchem.core.models.uma.escn_moe.DatasetSpecificSingleHeadWrapper",
            "head_cls": "fairchem.core.models.uma.escn_md.MLP_EFS_Head",
            "head_kwargs": {"wrap_property": False},
            "dataset_names": DATASETS,
        }
    }
    tasks = []
    for dataset in DATASETS:
        for prop, level in (("energy", "system"), ("forces", "atom"), ("stress", "system")):
            task = {
                "_target_": "fairchem.core.units.mlip_unit.mlip_unit.Task",
                "name": f"{dataset}_{prop}",
                "level": level,
                "property": prop,
                "out_spec": {"dim": [1] if prop == "energy" else [3], "dtype": "float32"},
                "normalizer": {
                    "_target_": "fairchem.core.modules.normalization.normalizer.Normalizer",
                    "mean": 0.0,
                    "rmsd": 1.423,
                },
                "datasets": [dataset],
                "metrics": ["mae"],
            }
            if prop == "energy":
                task["element_references"] = {
                    "_target_": "fairchem.core.modules.normalization.element_references.ElementReferences",
                    "element_references": {
                        "_target_": "torch.DoubleTensor",
                        "_args_": [element_references[dataset]],
                    },
                }
            tasks.append(task)
    return {
        "job": {"run_name": "tiny"},
        "runner": {
            "train_eval_unit": {
                "model": {
                    "_target_": "fairchem.core.models.base.HydraModel",
                    "backbone": backbone,
                    "heads": heads,
                    "pass_through_head_outputs": True,
                },
                "tasks": tasks,
            }
        },
    }


def main() -> None:
    generator = torch.Generator().manual_seed(7)
    element_references = {
        dataset: (torch.randn(N_ELEMENTS, generator=generator, dtype=torch.float64) * 3).tolist()
        for dataset in DATASETS
    }
    with tempfile.TemporaryDirectory() as tmp:
        # Round-trip through YAML as fairchem's runner does (resolved config file).
        yaml_path = Path(tmp) / "config.yaml"
        OmegaConf.save(OmegaConf.create(job_config(element_references)), yaml_path)
        config = OmegaConf.load(yaml_path)
    unit = config.runner.train_eval_unit

    torch.manual_seed(11)
    model = hydra.utils.instantiate(unit.model)
    with torch.no_grad():  # random, non-trivial weights everywhere
        for parameter in model.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.3)
    ema = torch.optim.swa_utils.AveragedModel(model)
    ckpt_path = OUT / "ckpt_tiny_fairchem.pt"
    torch.save(
        MLIPInferenceCheckpoint(
            model_config=unit.model,
            model_state_dict=model.state_dict(),
            ema_state_dict=ema.state_dict(),
            tasks_config=unit.tasks,
        ),
        ckpt_path,
    )

    # What fairchem reads back from the file.
    loaded = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    fairchem_model, _ = load_inference_model(str(ckpt_path), use_ema=True)
    tasks = load_tasks(str(ckpt_path))
    ema_state = {k: v for k, v in loaded.ema_state_dict.items() if k != "n_averaged"}
    reference = {
        "model_config": OmegaConf.to_container(loaded.model_config, resolve=True),
        "state_dict": {
            key.removeprefix("module."): {
                "shape": list(value.shape),
                "dtype": str(value.dtype).removeprefix("torch."),
                "sum": float(value.double().sum()),
                "first": float(value.flatten()[0]) if value.numel() else None,
            }
            for key, value in ema_state.items()
        },
        # AveragedModel: the architecture itself is its .module
        "model_keys": sorted(fairchem_model.module.state_dict()),
        "tasks": [
            {
                "name": task.name,
                "level": task.level,
                "property": task.property,
                "datasets": list(task.datasets),
                "normalizer": {
                    "mean": float(task.normalizer.mean),
                    "rmsd": float(task.normalizer.rmsd),
                },
                "element_references": (
                    None
                    if task.element_references is None
                    else task.element_references.element_references.tolist()
                ),
            }
            for task in tasks
        ],
    }
    (OUT / "ckpt_tiny_fairchem.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {ckpt_path} ({ckpt_path.stat().st_size} bytes) and its reference JSON")


if __name__ == "__main__":
    main()
