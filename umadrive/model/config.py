"""The UMA architecture a checkpoint's ``model_config`` describes, checked and typed.

Supported: UMA 1.0 (``uma-s-1``: no ``model_id``, no ``backbone.model_version``),
UMA 1.1 (``uma-s-1p1``, ``uma-m-1p1``: ``backbone.model_version == 1.1``, or the
``model_id`` "UMA-1.1" fairchem back-fills) and UMA 1.2 / 1.2.1 (``uma-s-1p2``,
``uma-s-1p2p1`` and its fine-tunes: ``model_id`` "UMA-S-1.2" / "UMA-S-1.2.1").
Anything else (another ``model_id``, or options the released models do not use)
is refused with :class:`UnsupportedModelError`, naming what is supported.

UMA 1.2 and later name their datasets with a ``dataset_mapping`` (name -> the
embedding / head expert it uses; several names may share one) and route the
energy head by dataset (``DatasetSpecificMoEWrapper``); 1.0/1.1 list datasets and
share one head (``DatasetSpecificSingleHeadWrapper``).
"""

from __future__ import annotations

from dataclasses import dataclass

SUPPORTED_VERSIONS = ("1.0", "1.1", "1.2", "1.2.1")
#: ``model_config.model_id`` -> version (fairchem writes "UMA-1.1" into 1.1 configs it loads).
MODEL_IDS = {"UMA-1.1": "1.1", "UMA-S-1.2": "1.2", "UMA-S-1.2.1": "1.2.1"}
_SUPPORTED = ("UMA 1.0, 1.1, 1.2, 1.2.1 (model_id " + ", ".join(MODEL_IDS)
              + "; uma-s-1, uma-s-1p1, uma-m-1p1, uma-s-1p2, uma-s-1p2p1)")
_BACKBONE_CLASS = "eSCNMDMoeBackbone"
_SHARED_HEAD = "DatasetSpecificSingleHeadWrapper"
_EXPERT_HEAD = "DatasetSpecificMoEWrapper"
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
    dataset_mapping: dict[str, str] | None = None
    charge_channels: tuple[int, int] = (0, 0)
    spin_channels: tuple[int, int] = (0, 0)

    @property
    def composition_includes_self(self) -> bool:
        """UMA 1.0 and UMA-S-1.2 average the composition embedding over n + 1 entries
        (fairchem's ``index_reduce_(..., include_self=True)`` on a zero tensor), so their
        expert mix depends on the atom count; 1.1 and 1.2.1 take the plain mean."""
        return self.version in ("1.0", "1.2")

    def embedding_of(self, dataset: str) -> str:
        """The dataset embedding a task name uses (itself unless a mapping says otherwise)."""
        return self.dataset_mapping[dataset] if self.dataset_mapping else dataset


@dataclass(frozen=True)
class HeadConfig:
    """The energy head.

    datasets: the task names it answers (sorted). experts: None for one MLP shared
    by all datasets (UMA 1.0/1.1); else, per task name, the index of its expert
    MLP (UMA 1.2+: one expert slot per mapping key, the index of its target among
    the sorted distinct targets, as fairchem's ``_build_expert_mapping``).
    """

    name: str
    datasets: list[str]
    experts: dict[str, int] | None = None

    @property
    def num_experts(self) -> int:
        return len(self.experts) if self.experts else 0


def model_version(model_config: dict) -> str:
    """One of :data:`SUPPORTED_VERSIONS`; UnsupportedModelError for anything else."""
    model_id = model_config.get("model_id")
    if isinstance(model_id, str) and model_id.strip():
        if model_id not in MODEL_IDS:
            raise UnsupportedModelError(
                f"unsupported model_id {model_id!r}; umadrive supports {_SUPPORTED}. "
                "A newer UMA needs a newer umadrive")
        return MODEL_IDS[model_id]
    backbone = model_config.get("backbone") or {}
    version = backbone.get("model_version", 1.0)
    if version in (1.0, "1.0"):
        return "1.0"
    if version in (1.1, "1.1"):
        return "1.1"
    raise UnsupportedModelError(
        f"unsupported model version {version}; umadrive supports {_SUPPORTED}")


def dataset_mapping(config: dict, where: str) -> dict[str, str] | None:
    """A ``dataset_mapping`` entry as a plain dict (None if absent); its targets
    must be names of the mapping itself (as fairchem requires)."""
    mapping = config.get("dataset_mapping")
    if not mapping:
        return None
    mapping = {str(key): str(value) for key, value in dict(mapping).items()}
    unknown = sorted(set(mapping.values()) - set(mapping))
    if unknown:
        raise UnsupportedModelError(
            f"model_config.{where}.dataset_mapping sends names to {unknown}, which are not "
            f"keys of the mapping {mapping}; every target must be a dataset name too")
    return mapping


def _channel_range(value, name: str) -> tuple[int, int]:
    """[start, end) of a contiguous list of channels (empty: (0, 0))."""
    channels = sorted(int(channel) for channel in value or [])
    if not channels:
        return 0, 0
    if channels != list(range(channels[0], channels[-1] + 1)) or channels[0] < 0:
        raise UnsupportedModelError(
            f"backbone.{name}={list(value)} must be contiguous non-negative channels "
            "(e.g. [0, 1, 2])")
    return channels[0], channels[-1] + 1


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
    mapping = dataset_mapping(backbone, "backbone")
    datasets = list(mapping) if mapping else list(_require(backbone, "dataset_list", "backbone"))
    num_experts = int(_require(backbone, "num_experts", "backbone"))
    if num_experts < 1:
        raise UnsupportedModelError(f"num_experts={num_experts}: UMA models have experts (>= 1)")
    sphere_channels = int(_require(backbone, "sphere_channels", "backbone"))
    charge_channels = _channel_range(backbone.get("charge_balanced_channels"),
                                     "charge_balanced_channels")
    spin_channels = _channel_range(backbone.get("spin_balanced_channels"),
                                   "spin_balanced_channels")
    for name, (_, end) in (("charge", charge_channels), ("spin", spin_channels)):
        if end > sphere_channels:
            raise UnsupportedModelError(
                f"backbone.{name}_balanced_channels reach channel {end - 1}, beyond "
                f"sphere_channels={sphere_channels}")
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
        dataset_mapping=mapping,
        charge_channels=charge_channels,
        spin_channels=spin_channels,
    )


def head_config(model_config: dict) -> HeadConfig:
    """The single energy head of a UMA ``model_config``: shared (1.0/1.1) or one
    expert MLP per dataset (1.2+)."""
    heads = _require(model_config, "heads", "")
    if len(heads) != 1:
        raise UnsupportedModelError(
            f"unsupported heads {sorted(heads)}: UMA models have one energy head")
    (name, head), = heads.items()
    module = str(head.get("module", ""))
    head_class = str(head.get("head_cls", ""))
    if not module.endswith((_SHARED_HEAD, _EXPERT_HEAD)) or not head_class.endswith(_HEAD_CLASS):
        raise UnsupportedModelError(
            f"unsupported head {name!r} ({module}, {head_class}); umadrive implements "
            f"{_SHARED_HEAD} (UMA 1.0/1.1) and {_EXPERT_HEAD} (UMA 1.2+) around {_HEAD_CLASS}")
    mapping = dataset_mapping(head, f"heads.{name}")
    if module.endswith(_SHARED_HEAD):
        datasets = head.get("dataset_names") or list(mapping or [])
        return HeadConfig(name=str(name), datasets=sorted(datasets))
    if mapping is None:
        mapping = {str(dataset): str(dataset) for dataset in head.get("dataset_names") or []}
    if not mapping:
        raise UnsupportedModelError(
            f"head {name!r} ({_EXPERT_HEAD}) names no datasets (dataset_mapping)")
    targets = sorted(set(mapping.values()))
    experts = {dataset: targets.index(mapping[dataset]) for dataset in sorted(mapping)}
    return HeadConfig(name=str(name), datasets=sorted(mapping), experts=experts)
