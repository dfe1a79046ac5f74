"""The UMA architecture a checkpoint's ``model_config`` describes, checked and typed.

Supported: UMA 1.0 (``uma-s-1``: no ``model_id``, no ``backbone.model_version``)
and UMA 1.1 (``uma-s-1p1``, ``uma-m-1p1``: ``backbone.model_version == 1.1``).
Anything else (e.g. UMA 1.2, which carries a ``model_id``, or a 1.1 file with
options the released models do not use) is refused with :class:`UnsupportedModelError`.
"""

from __future__ import annotations

from dataclasses import dataclass

SUPPORTED_VERSIONS = ("1.0", "1.1")
_BACKBONE_CLASS = "eSCNMDMoeBackbone"
_HEAD_WRAPPER = "DatasetSpecificSingleHeadWrapper"
_HEAD_CLASS = "MLP_EFS_Head"

# Backbone options umadrive implements: name -> the only accepted value.
_FIXED_OPTIONS = {
    "distance_function": "gaussian",
    "norm_type": "rms_norm_sh",
    "act_type": "gate",
    "ff_type": "spectral",
    "chg_spin_emb_type": "rand_emb",
    "moe_type": "so2",
    "moe_expert_coefficient_norm": "softmax",
    "direct_forces": False,
    "use_dataset_embedding": True,
    "charge_balanced_channels": None,
    "spin_balanced_channels": None,
    "layers_moe": None,
    "moe_single": False,
}


class UnsupportedModelError(ValueError):
    """The checkpoint describes a model umadrive does not implement."""


@dataclass(frozen=True)
class BackboneConfig:
    """Sizes and options of the eSCN-MD MoLE backbone (all from the checkpoint)."""

    version: str
    max_num_elements: int
    sphere_channels: int
    hidden_channels: int
    edge_channels: int
    lmax: int
    mmax: int
    num_layers: int
    num_experts: int
    num_distance_basis: int
    cutoff: float
    max_neighbors: int
    datasets: list[str]
    use_composition_embedding: bool

    @property
    def composition_includes_self(self) -> bool:
        """UMA 1.0 averages the composition embedding over n + 1 entries (a zero 'self')."""
        return self.version == "1.0"


@dataclass(frozen=True)
class HeadConfig:
    """The energy head: one MLP shared by the datasets it lists."""

    name: str
    datasets: list[str]


def model_version(model_config: dict) -> str:
    """"1.0" or "1.1"; UnsupportedModelError for anything else."""
    model_id = model_config.get("model_id")
    if isinstance(model_id, str) and model_id.strip():
        raise UnsupportedModelError(
            f"unsupported model version {model_id}, supported: UMA "
            f"{', '.join(SUPPORTED_VERSIONS)} (uma-s-1, uma-s-1p1, uma-m-1p1)")
    backbone = model_config.get("backbone") or {}
    version = backbone.get("model_version", 1.0)
    if version in (1.0, "1.0"):
        return "1.0"
    if version in (1.1, "1.1"):
        return "1.1"
    raise UnsupportedModelError(
        f"unsupported model version {version}, supported: UMA {', '.join(SUPPORTED_VERSIONS)} "
        f"(uma-s-1, uma-s-1p1, uma-m-1p1)")


def _require(config: dict, key: str, where: str):
    if key not in config:
        raise UnsupportedModelError(f"model_config.{where} has no '{key}'; is this a UMA checkpoint?")
    return config[key]


def backbone_config(model_config: dict) -> BackboneConfig:
    """The typed backbone description of ``model_config`` (plain dicts and lists)."""
    version = model_version(model_config)
    backbone = _require(model_config, "backbone", "")
    model_class = str(_require(backbone, "model", "backbone"))
    if not model_class.endswith(_BACKBONE_CLASS) and model_class != "escnmd_moe_backbone":
        raise UnsupportedModelError(
            f"unsupported backbone {model_class!r}; umadrive implements UMA's {_BACKBONE_CLASS}")
    for option, accepted in _FIXED_OPTIONS.items():
        value = backbone.get(option, accepted)
        if value != accepted and not (accepted is None and not value):
            raise UnsupportedModelError(
                f"unsupported backbone option {option}={value!r}; umadrive implements "
                f"{option}={accepted!r} (as in the released UMA {'/'.join(SUPPORTED_VERSIONS)} models)")
    if backbone.get("dataset_mapping"):
        mapping = dict(backbone["dataset_mapping"])
        if any(key != value for key, value in mapping.items()):
            raise UnsupportedModelError(
                f"unsupported dataset_mapping {mapping}: only identity mappings are implemented")
        datasets = list(mapping)
    else:
        datasets = list(_require(backbone, "dataset_list", "backbone"))
    num_experts = int(_require(backbone, "num_experts", "backbone"))
    if num_experts < 1:
        raise UnsupportedModelError(f"num_experts={num_experts}: UMA models have experts (>= 1)")
    sphere_channels = int(_require(backbone, "sphere_channels", "backbone"))
    return BackboneConfig(
        version=version,
        max_num_elements=int(backbone.get("max_num_elements", 100)),
        sphere_channels=sphere_channels,
        hidden_channels=int(backbone.get("hidden_channels", 128)),
        edge_channels=int(backbone.get("edge_channels", 128)),
        lmax=int(_require(backbone, "lmax", "backbone")),
        mmax=int(_require(backbone, "mmax", "backbone")),
        num_layers=int(_require(backbone, "num_layers", "backbone")),
        num_experts=num_experts,
        num_distance_basis=int(backbone.get("num_distance_basis", 512)),
        cutoff=float(_require(backbone, "cutoff", "backbone")),
        max_neighbors=int(_require(backbone, "max_neighbors", "backbone")),
        datasets=datasets,
        use_composition_embedding=bool(backbone.get("use_composition_embedding", False)),
    )


def head_config(model_config: dict) -> HeadConfig:
    """The single energy head of a UMA 1.0/1.1 ``model_config``."""
    heads = _require(model_config, "heads", "")
    if len(heads) != 1:
        raise UnsupportedModelError(
            f"unsupported heads {sorted(heads)}: UMA 1.0/1.1 have one energy head")
    (name, head), = heads.items()
    module = str(head.get("module", ""))
    head_class = str(head.get("head_cls", ""))
    if not module.endswith(_HEAD_WRAPPER) or not head_class.endswith(_HEAD_CLASS):
        raise UnsupportedModelError(
            f"unsupported head {name!r} ({module}, {head_class}); umadrive implements "
            f"{_HEAD_WRAPPER} around {_HEAD_CLASS} (UMA {'/'.join(SUPPORTED_VERSIONS)})")
    datasets = head.get("dataset_names") or head.get("dataset_mapping") or []
    return HeadConfig(name=str(name), datasets=sorted(datasets))
