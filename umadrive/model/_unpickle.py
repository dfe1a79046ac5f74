"""A restricted reader for pickled torch zip checkpoints.

A fairchem checkpoint is a torch zip file whose ``data.pkl`` pickles a
``MLIPInferenceCheckpoint`` holding OmegaConf configs and tensors. Unpickling it
with the real classes would run whatever the pickle names. This reader maps
exactly the globals such a file uses onto inert stand-ins defined here and
refuses every other global, so reading a file never runs code from it.

What the reader returns: plain ``dict``/``list``/scalars, ``torch.Tensor`` for
tensors, and the stand-in instances below (``FairchemCheckpoint``,
``OmegaConfNode``) whose ``state`` is the pickled attribute dict. Turning those
into plain configs is :mod:`umadrive.model.checkpoint`'s job.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import zipfile
from typing import Any

import torch


class UnpickleRefused(ValueError):
    """The pickle asks for something this reader does not allow."""


class _StateHolder:
    """A stand-in for a pickled class instance: keeps the pickled state, runs nothing.

    Unpickling creates instances with ``cls.__new__`` and then, if the pickle has
    a state, calls ``__setstate__``; ``state`` stays None otherwise.
    """

    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class FairchemCheckpoint(_StateHolder):
    """Stands in for ``fairchem...api.inference.MLIPInferenceCheckpoint``."""


class OmegaConfNode(_StateHolder):
    """Stands in for an OmegaConf container or value node.

    ``kind`` is ``"dict"``, ``"list"`` or ``"value"``; ``state`` holds
    ``_content`` (containers) or ``_val`` (value nodes) and ``_parent``.
    """

    kind = "value"


class _DictConfig(OmegaConfNode):
    kind = "dict"


class _ListConfig(OmegaConfNode):
    kind = "list"


class _OmegaConfMetadata(_StateHolder):
    """Stands in for OmegaConf's node metadata (types, flags): read and ignored."""


class _TypeName:
    """Stands in for a type named in OmegaConf metadata (``typing.Any``, ``dict``, …)."""

    def __init__(self, qualified_name: str) -> None:
        self.qualified_name = qualified_name

    def __repr__(self) -> str:
        return f"<type {self.qualified_name}>"


def _metadata_cache(default_factory: Any = None) -> dict:
    """``collections.defaultdict(dict)`` in OmegaConf metadata: an empty dict here."""
    return {}


class _OrderedDict(dict):
    """Stands in for ``collections.OrderedDict``; torch state dicts pickle a
    ``_metadata`` attribute (per-module versions) on it, which is dropped."""

    def __setstate__(self, state: Any) -> None:
        pass


def _rebuild_tensor(
    storage: torch.Tensor,
    storage_offset: int,
    size: tuple,
    stride: tuple,
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` on a flat tensor read from the zip."""
    needed = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if min(size, default=1) > 0 and needed > storage.numel():
        raise UnpickleRefused(
            f"tensor of size {tuple(size)} and stride {tuple(stride)} at offset "
            f"{storage_offset} reaches element {needed - 1} of a storage with "
            f"{storage.numel()} elements; the file is corrupt"
        )
    return storage.as_strided(tuple(size), tuple(stride), storage_offset)


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool, backward_hooks: Any) -> torch.Tensor:
    return data


class _StorageType:
    """Stands in for ``torch.FloatStorage`` and friends: only names a dtype."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}

_TYPE_NAMES = [("typing", name) for name in ("Any", "Dict", "List", "Tuple", "Optional", "Union")]

# Data-only builtins: calling them with pickled arguments builds data and runs no
# code from the file.
_BUILTIN_TYPES = {
    cls.__name__: cls for cls in (dict, list, tuple, set, frozenset, int, float, str, bool, complex)
}

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("fairchem.core.units.mlip_unit.api.inference", "MLIPInferenceCheckpoint"): FairchemCheckpoint,
    ("omegaconf.dictconfig", "DictConfig"): _DictConfig,
    ("omegaconf.listconfig", "ListConfig"): _ListConfig,
    **{
        ("omegaconf.nodes", node): OmegaConfNode
        for node in ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "BytesNode", "PathNode")
    },
    ("omegaconf.base", "Metadata"): _OmegaConfMetadata,
    ("omegaconf.base", "ContainerMetadata"): _OmegaConfMetadata,
    ("collections", "defaultdict"): _metadata_cache,
    ("collections", "OrderedDict"): _OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
    **{("torch.storage", "UntypedStorage"): _StorageType(torch.uint8)},
    **{key: _TypeName(".".join(key)) for key in _TYPE_NAMES},
    **{(module, name): cls for module in ("builtins", "__builtin__") for name, cls in _BUILTIN_TYPES.items()},
    ("builtins", "object"): object,
    ("__builtin__", "object"): object,
    # Protocol-2 pickles spell int and str with their Python 2 names.
    ("__builtin__", "long"): int,
    ("__builtin__", "unicode"): str,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, file_size: int) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._file_size = file_size
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnpickleRefused(
                f"the pickle asks for the global {module}.{name}, which a "
                "checkpoint does not need; refusing to load it (the file may be "
                "malicious or from an unsupported source)"
            ) from None

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnpickleRefused(f"unknown persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise UnpickleRefused(f"malformed storage record {pid!r}")
        if key not in self._storages:
            self._storages[key] = self._read_storage(key, storage_type.dtype, numel)
        return self._storages[key]

    def _read_storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        info = _stored_entry(self._archive, f"{self._prefix}data/{key}", self._file_size)
        entry = info.filename
        itemsize = torch.empty((), dtype=dtype).element_size()
        if info.file_size != numel * itemsize:
            raise UnpickleRefused(
                f"storage {entry!r} holds {info.file_size} bytes, expected "
                f"{numel} x {itemsize}; the file is corrupt"
            )
        buffer = bytearray(info.file_size)
        with self._archive.open(info) as stream:
            if stream.readinto(buffer) != info.file_size:
                raise UnpickleRefused(f"storage {entry!r} is truncated")
        if not buffer:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(buffer, dtype=dtype)


def _stored_entry(archive: zipfile.ZipFile, entry: str, file_size: int) -> zipfile.ZipInfo:
    """The zip entry ``entry``, checked to be stored uncompressed (as torch writes
    it) and no larger than the file, so its header cannot make us allocate more."""
    try:
        info = archive.getinfo(entry)
    except KeyError:
        raise UnpickleRefused(f"entry {entry!r} is missing from the zip") from None
    if info.compress_type != zipfile.ZIP_STORED:
        raise UnpickleRefused(
            f"entry {entry!r} is compressed; torch writes checkpoints uncompressed"
        )
    if info.file_size > file_size:
        raise UnpickleRefused(
            f"entry {entry!r} claims {info.file_size} bytes, more than the "
            "whole file; the file is truncated or corrupt"
        )
    return info


def read_torch_zip(path: str) -> Any:
    """Unpickle ``data.pkl`` of the torch zip file at ``path`` with the allowlist.

    Raises ``UnpickleRefused`` for a refused global or a malformed storage,
    ``zipfile.BadZipFile`` for a file that is not a zip, and the pickle module's
    errors for a damaged pickle.
    """
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
        if len(pickles) != 1:
            raise UnpickleRefused(
                f"expected one data.pkl in the zip, found {len(pickles)}"
            )
        prefix = pickles[0][: -len("data.pkl")]
        byteorder_entry = f"{prefix}byteorder"
        if byteorder_entry in archive.namelist():
            byteorder = archive.read(byteorder_entry).decode()
            if byteorder != sys.byteorder:
                raise UnpickleRefused(
                    f"tensors are stored {byteorder}-endian, this machine is "
                    f"{sys.byteorder}-endian"
                )
        file_size = os.path.getsize(path)
        data = archive.read(_stored_entry(archive, pickles[0], file_size))
        unpickler = _RestrictedUnpickler(data, archive, prefix, file_size)
        return unpickler.load()

