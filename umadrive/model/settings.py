"""Inference settings: the seed's ``InferenceSettings`` with its two presets.

Semantics (see the UMA spec, "Inference settings"):

* ``tf32``: TF32 matmuls inside each forward on CUDA, restored afterwards; inactive on CPU.
* ``activation_checkpointing``: where a step's edge activations exceed the memory
  budget, edge chunks recomputed in the backward pass (less memory); steps that
  fit run without (:mod:`umadrive.model.activation_memory`).
* ``merge_mole``: merge the mixture-of-linear-experts weights for the composition,
  charge, spin and task of the first call; re-merge when these change.
* ``compile``: ``torch.compile(dynamic=True)`` of the model; graph generation stays outside.
* ``wigner_cuda``: CUDA graphs for the per-edge Wigner matrices; inactive on CPU.
* ``external_graph_gen``: the caller supplies edge index and cell offsets.
* ``internal_graph_gen_version``: 1 (all pairs over images) or 2 (binned, default).
* ``base_precision_dtype``: float32 or float64 for the network (energies are
  always accumulated and returned in float64).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from dataclasses import asdict, dataclass, field, fields

import torch

_GRAPH_GEN_VERSIONS = (1, 2)
_BASE_DTYPES = (torch.float32, torch.float64)
_DTYPE_NAMES = {str(dtype).removeprefix("torch."): dtype for dtype in _BASE_DTYPES}


class InferenceSettingsError(ValueError):
    """An invalid combination of inference settings."""


@dataclass(frozen=True)
class InferenceSettings:
    tf32: bool = False
    activation_checkpointing: bool = True
    merge_mole: bool = False
    compile: bool = False
    wigner_cuda: bool = False
    external_graph_gen: bool = False
    internal_graph_gen_version: int = 2
    base_precision_dtype: torch.dtype = field(default=torch.float32)

    def __post_init__(self) -> None:
        for name in ("tf32", "activation_checkpointing", "merge_mole", "compile",
                     "wigner_cuda", "external_graph_gen"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise InferenceSettingsError(
                    f"InferenceSettings.{name} must be True or False, got {value!r}"
                )
        if self.internal_graph_gen_version not in _GRAPH_GEN_VERSIONS:
            raise InferenceSettingsError(
                f"InferenceSettings.internal_graph_gen_version={self.internal_graph_gen_version!r} "
                f"is not supported; use one of {_GRAPH_GEN_VERSIONS}"
            )
        if self.base_precision_dtype not in _BASE_DTYPES:
            raise InferenceSettingsError(
                f"InferenceSettings.base_precision_dtype={self.base_precision_dtype!r} is not "
                f"supported; use torch.float32 or torch.float64"
            )
        if self.tf32 and self.base_precision_dtype == torch.float64:
            raise InferenceSettingsError(
                "InferenceSettings.tf32=True has no effect with base_precision_dtype=torch.float64 "
                "(TF32 only changes float32 matmuls); set tf32=False or use torch.float32"
            )

    @classmethod
    def preset(cls, name: str) -> "InferenceSettings":
        """The named preset: ``"default"`` or ``"turbo"`` (the spec's table)."""
        try:
            return cls(**PRESETS[name])
        except KeyError:
            raise InferenceSettingsError(
                f"unknown inference settings preset {name!r}; known: {sorted(PRESETS)}"
            ) from None

    def as_dict(self) -> dict:
        """Plain values (dtype as its name), e.g. for logs and JSON."""
        values = asdict(self)
        values["base_precision_dtype"] = str(self.base_precision_dtype).removeprefix("torch.")
        return values

    @classmethod
    def from_dict(cls, values: dict, *, base: str = "default") -> "InferenceSettings":
        """The inverse of :meth:`as_dict`: plain values (``base_precision_dtype``
        as ``"float32"``/``"float64"``) over the preset ``base``; fields left out
        keep the preset's value. Unknown fields are refused."""
        if not isinstance(values, dict):
            raise InferenceSettingsError(f"expected an object of inference settings, got "
                                         f"{type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InferenceSettingsError(f"unknown settings {unknown}; known: {sorted(known)}")
        values = dict(values)
        if "base_precision_dtype" in values:
            name = values["base_precision_dtype"]
            if name not in _DTYPE_NAMES:
                raise InferenceSettingsError(f"base_precision_dtype {name!r}, expected one of "
                                             f"{sorted(_DTYPE_NAMES)}")
            values["base_precision_dtype"] = _DTYPE_NAMES[name]
        return cls(**{**PRESETS[base], **values})

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "InferenceSettings":
        """:meth:`from_dict` of the JSON object in the file at ``path``."""
        try:
            values = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise InferenceSettingsError(f"{os.fspath(path)!r} is not JSON ({error})") from None
        return cls.from_dict(values)


# The one table of presets (seed document / UMA spec).
PRESETS: dict[str, dict] = {
    "default": dict(tf32=False, activation_checkpointing=True, merge_mole=False, compile=False,
                    wigner_cuda=False, external_graph_gen=False, internal_graph_gen_version=2),
    "turbo": dict(tf32=True, activation_checkpointing=False, merge_mole=True, compile=True,
                  wigner_cuda=True, external_graph_gen=False, internal_graph_gen_version=2),
}


def resolve_settings(settings: "str | InferenceSettings") -> InferenceSettings:
    """A preset name or an ``InferenceSettings`` instance, as an instance."""
    if isinstance(settings, InferenceSettings):
        return settings
    if isinstance(settings, str):
        return InferenceSettings.preset(settings)
    raise InferenceSettingsError(
        f"inference_settings must be a preset name {sorted(PRESETS)} or an InferenceSettings, "
        f"got {type(settings).__name__}"
    )
