"""Reading UMA checkpoints safely, and umadrive's own checkpoint format.

Two formats are read, both torch zip files, both without running code from the file:

* **fairchem** (``uma-s-1p1.pt`` and friends): the zip's pickle holds a
  ``MLIPInferenceCheckpoint`` with OmegaConf configs. It is read by the
  allowlisting unpickler in :mod:`umadrive.model._unpickle`; the configs become
  plain dicts and the EMA weights (the ones inference uses) the state dict.
* **umadrive**: a dict of tensors, strings and numbers with a format tag and
  version, configs as JSON strings. ``torch.load(path, weights_only=True)`` reads
  it too; :func:`save_checkpoint` writes it.

``Checkpoint.tasks_config`` entries are plain dicts with the keys ``name``,
``level``, ``property``, ``datasets``, ``normalizer`` (``{"mean", "rmsd"}``,
floats) and ``element_references`` (float64 tensor indexed by atomic number, or
None). The normalizer values are the config's floats as written (``rmsd: 1.423``
is 1.423): fairchem builds its ``Normalizer`` tensors in the inference precision,
so a float64 prediction uses them unrounded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from umadrive.model._unpickle import FairchemCheckpoint, OmegaConfNode, read_torch_zip

FORMAT_TAG = "umadrive-checkpoint"
FORMAT_VERSION = 1

_TASK_KEYS = ("name", "level", "property", "datasets")
_EMA_PREFIX = "module."
_EMA_COUNTER = "n_averaged"
_TENSOR_TARGETS = ("torch.DoubleTensor", "torch.FloatTensor", "torch.tensor", "torch.Tensor")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the fix."""


@dataclass
class Checkpoint:
    """What umadrive needs from a checkpoint.

    model_config: plain nested dicts/lists/scalars (the architecture's settings).
    state_dict: the EMA weights, keys without the ``module.`` prefix, no ``n_averaged``.
    tasks_config: one plain dict per task (see the module docstring).
    source: ``"fairchem"`` or ``"umadrive"``, the format the file was in.
    """

    model_config: dict
    state_dict: dict[str, torch.Tensor]
    tasks_config: list[dict]
    source: str


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a fairchem or umadrive checkpoint from ``path``, detecting the format.

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError`
    for anything else that makes the file unusable (not a zip, truncated, a
    pickle naming a global a checkpoint does not need, missing fields).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    try:
        content = read_torch_zip(path)
    except Exception as error:  # any failure to parse an untrusted file
        raise CheckpointError(
            f"cannot read checkpoint {path!r}: {error} "
            "(expected a torch zip file as written by fairchem or umadrive; "
            "if it was downloaded, download it again)"
        ) from error
    if isinstance(content, FairchemCheckpoint):
        return _from_fairchem(content, path)
    if isinstance(content, dict) and content.get("format") == FORMAT_TAG:
        return _from_umadrive(content, path)
    raise CheckpointError(
        f"{path!r} is a torch file but neither a fairchem inference checkpoint nor a "
        f"umadrive checkpoint (top-level object: {type(content).__name__})"
    )


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` in umadrive's format (loadable with ``weights_only=True``)."""
    element_references = {}
    tasks = []
    for index, task in enumerate(checkpoint.tasks_config):
        task = dict(task)
        references = task.pop("element_references", None)
        if references is not None:
            element_references[str(index)] = references.detach().to("cpu", torch.float64).contiguous()
        tasks.append(task)
    torch.save(
        {
            "format": FORMAT_TAG,
            "version": FORMAT_VERSION,
            "model_config": json.dumps(checkpoint.model_config),
            "tasks_config": json.dumps(tasks),
            "element_references": element_references,
            "state_dict": {
                key: value.detach().to("cpu").contiguous()
                for key, value in checkpoint.state_dict.items()
            },
        },
        os.fspath(path),
    )


def check_state_dict_keys(expected: Iterable[str], found: Iterable[str]) -> None:
    """Raise :class:`CheckpointError` listing missing and unexpected weight names."""
    expected, found = set(expected), set(found)
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if not missing and not unexpected:
        return
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} weight(s): {_listing(missing)}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} weight(s): {_listing(unexpected)}")
    raise CheckpointError(
        "the checkpoint's weights do not fit the architecture built from its config: "
        + "; ".join(parts)
        + " (is the file from a supported UMA version, and complete?)"
    )


def _listing(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, … and {len(names) - limit} more"


def _from_umadrive(content: dict, path: str) -> Checkpoint:
    if content.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path!r} is umadrive checkpoint format version {content.get('version')!r}; "
            f"this umadrive reads version {FORMAT_VERSION} (upgrade umadrive)"
        )
    try:
        model_config = json.loads(content["model_config"])
        tasks = json.loads(content["tasks_config"])
        references = content["element_references"]
        state_dict = content["state_dict"]
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path!r}: damaged umadrive checkpoint ({error!r})") from error
    for index, task in enumerate(tasks):
        task["element_references"] = references.get(str(index))
    _check_tensors(state_dict, path)
    return Checkpoint(model_config, dict(state_dict), tasks, "umadrive")


def _from_fairchem(content: FairchemCheckpoint, path: str) -> Checkpoint:
    fields = content.state if isinstance(content.state, dict) else {}
    missing = [key for key in ("model_config", "ema_state_dict", "tasks_config") if key not in fields]
    if missing:
        raise CheckpointError(f"{path!r}: the fairchem checkpoint lacks {', '.join(missing)}")
    model_config = _plain(fields["model_config"], "model_config", path)
    tasks = _plain(fields["tasks_config"], "tasks_config", path)
    if not isinstance(model_config, dict) or not isinstance(tasks, list):
        raise CheckpointError(
            f"{path!r}: model_config must be a mapping and tasks_config a list, found "
            f"{type(model_config).__name__} and {type(tasks).__name__}"
        )
    ema = fields["ema_state_dict"]
    if not isinstance(ema, dict):
        raise CheckpointError(f"{path!r}: ema_state_dict is a {type(ema).__name__}, not a mapping")
    state_dict = {
        key[len(_EMA_PREFIX):] if key.startswith(_EMA_PREFIX) else key: value
        for key, value in ema.items()
        if key != _EMA_COUNTER
    }
    _check_tensors(state_dict, path)
    return Checkpoint(
        model_config, state_dict, [_task(task, path) for task in tasks], "fairchem"
    )


def _check_tensors(state_dict: Any, path: str) -> None:
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path!r}: the state dict is a {type(state_dict).__name__}")
    wrong = [key for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if wrong:
        raise CheckpointError(f"{path!r}: state dict entries that are not tensors: {_listing(wrong)}")


def _task(config: Any, path: str) -> dict:
    """One fairchem task config (``_target_: ...Task``) as umadrive's plain task dict."""
    if not isinstance(config, dict) or any(key not in config for key in _TASK_KEYS):
        raise CheckpointError(
            f"{path!r}: a task config needs the keys {', '.join(_TASK_KEYS)}; found {config!r:.200}"
        )
    normalizer = config.get("normalizer") or {}
    task = {key: config[key] for key in _TASK_KEYS}
    try:
        # fairchem's Normalizer: defaults mean 0, rmsd 1.
        task["normalizer"] = {
            "mean": _as_fairchem_buffer(normalizer.get("mean", 0.0)),
            "rmsd": _as_fairchem_buffer(normalizer.get("rmsd", 1.0)),
        }
    except (TypeError, ValueError, AttributeError, RuntimeError) as error:
        raise CheckpointError(f"{path!r}: task {config['name']!r} has a bad normalizer {normalizer!r}") from error
    task["element_references"] = _element_references(config.get("element_references"), config["name"], path)
    return task


def _as_fairchem_buffer(value: Any) -> float:
    """A config entry of a fairchem ``Normalizer`` (a float or a tensor) as a float."""
    return float(value)


def _element_references(value: Any, task_name: str, path: str) -> torch.Tensor | None:
    """The per-element energy references of one task as a float64 tensor, or None.

    fairchem configs write them as ``{_target_: ...ElementReferences,
    element_references: {_target_: torch.DoubleTensor, _args_: [[...]]}}``.
    """
    if value is None:
        return None
    if isinstance(value, dict) and "element_references" in value:
        value = value["element_references"]
    if isinstance(value, dict) and value.get("_target_") in _TENSOR_TARGETS:
        arguments = value.get("_args_") or [value.get("data")]
        value = arguments[0]
    try:
        references = torch.as_tensor(value, dtype=torch.float64).clone()
    except (TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{path!r}: task {task_name!r} has element references that are not a list "
            f"of numbers: {value!r:.200}"
        ) from error
    if references.ndim != 1:
        raise CheckpointError(
            f"{path!r}: task {task_name!r} element references have shape "
            f"{tuple(references.shape)}, expected one value per atomic number"
        )
    return references


def _plain(value: Any, where: str, path: str) -> Any:
    """Convert OmegaConf stand-ins (and containers holding them) to plain values."""
    if isinstance(value, OmegaConfNode):
        state = value.state if isinstance(value.state, dict) else {}
        content = state.get("_val") if value.kind == "value" else state.get("_content")
        if value.kind == "dict" and isinstance(content, dict):
            return {key: _plain(item, f"{where}.{key}", path) for key, item in content.items()}
        if value.kind == "list" and isinstance(content, list):
            return [_plain(item, f"{where}[{i}]", path) for i, item in enumerate(content)]
        if value.kind != "value" and content is not None and not isinstance(content, str):
            raise CheckpointError(f"{path!r}: cannot read config node {where} ({content!r:.100})")
        value = content
    if isinstance(value, dict):
        return {key: _plain(item, f"{where}.{key}", path) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{i}]", path) for i, item in enumerate(value)]
    if isinstance(value, str) and ("${" in value or value == "???"):
        # fairchem saves resolved configs; an unresolved one is not a release checkpoint.
        raise CheckpointError(
            f"{path!r}: the config value at {where} is the unresolved OmegaConf "
            f"expression {value!r}; resolve the config (OmegaConf.resolve) and save again"
        )
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    raise CheckpointError(f"{path!r}: unexpected {type(value).__name__} in the config at {where}")
