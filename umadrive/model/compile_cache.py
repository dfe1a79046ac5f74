"""Compiled kernels kept across processes, under ``$UMADRIVE_CACHE/compiled/``.

One entry per :class:`KernelKey`: everything that makes torch.compile's output
valid for a model (its weights and architecture, the source of the model code
that is traced, the inference settings, dtype, device and its capability, the
compile backend, torch and Python versions). The payload is the message passing
precompiled by torch (``aot_compile``, serialised: dynamo's guards and
bytecode, AOTAutograd's forward and backward, inductor's generated code; see
:mod:`umadrive.model.compiling`); loading it skips the tracing. Torch checks
its own versions when it loads the payload, and the guards when it is called:
inputs it does not fit go to a new compile, never through wrong code.

An entry file is a magic line, one JSON header line (the key, the payload's
length and SHA-256) and the payload. It is written to a temporary file in the
same folder and renamed over the entry (atomic on POSIX), so any number of
processes may write and read the same entry at once: a reader sees a whole old
entry, a whole new one, or none. A file that fails any check (truncated,
damaged, another key, another format) is reported, removed and rebuilt; it is
never handed to torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from umadrive.model.names import umadrive_cache

log = logging.getLogger(__name__)

#: Bumped when the entry layout or what the payload means changes.
FORMAT = 2
_MAGIC = b"UMADRIVE-COMPILED-KERNELS\n"
_MODEL_CODE = Path(__file__).parent


@dataclass(frozen=True)
class KernelKey:
    """What compiled kernels depend on; two processes with equal keys share them.

    model_sha256: SHA-256 of the model's architecture and weights (:func:`model_digest`).
    code_sha256: SHA-256 of the model code's source (:func:`code_digest`).
    settings: the inference settings (``InferenceSettings.as_dict()``) as JSON.
    device: "cpu" or "cuda". capability: the device's instruction set (CPU:
    torch's vector ISA, the machine and torch's thread count) or CUDA compute
    capability and name.
    backend: torch.compile's backend. torch, python: versions.
    """

    model_sha256: str
    code_sha256: str
    settings: str
    device: str
    capability: str
    backend: str
    torch: str
    python: str
    format: int = FORMAT

    @classmethod
    def of(cls, model: torch.nn.Module, settings: dict, device: torch.device,
           backend: str) -> "KernelKey":
        """The key of ``model`` (on ``device``) compiled with ``backend`` under ``settings``."""
        return cls(model_sha256=model_digest(model), code_sha256=code_digest(),
                   settings=json.dumps(settings, sort_keys=True), device=device.type,
                   capability=device_capability(device), backend=backend,
                   torch=torch.__version__, python=platform.python_version())

    def as_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def file_name(self) -> str:
        return hashlib.sha256(self.as_json().encode()).hexdigest()[:32] + ".bin"


def model_digest(model: torch.nn.Module) -> str:
    """SHA-256 over every state-dict entry's name, dtype, shape and bytes, and the
    model's ``config`` (architecture) when it has one."""
    digest = hashlib.sha256(repr(getattr(model, "config", None)).encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        # the array's own buffer, not a copy (UMA-S: 1.2 GB hashed at every start)
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()


def code_digest(folder: Path = _MODEL_CODE) -> str:
    """SHA-256 of the ``*.py`` sources in ``folder`` (default: :mod:`umadrive.model`,
    the code the compile traces, which the precompiled payload holds as bytecode)."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(f"{path.name}|".encode() + path.read_bytes())
    return digest.hexdigest()


def device_capability(device: torch.device) -> str:
    """What the generated code of ``device`` depends on beyond its type."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"sm_{major}{minor} {torch.cuda.get_device_name(device)} cuda {torch.version.cuda}"
    # torch guards compiled CPU code on the thread count (inductor's C++ is
    # generated for it): another count would only miss and compile anew
    return (f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads")


def default_folder() -> Path:
    """``$UMADRIVE_CACHE/compiled`` (default ``~/.cache/umadrive/compiled``)."""
    return umadrive_cache() / "compiled"


class KernelCache:
    """The entries under ``folder`` (created when the first entry is written)."""

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_folder()

    def path(self, key: KernelKey) -> Path:
        return self.folder / key.file_name()

    def load(self, key: KernelKey) -> bytes | None:
        """The payload stored for ``key``; None when there is none, it cannot be read
        (a warning) or the entry fails a check (it is then removed, with a warning
        naming it and why)."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:  # unreadable: compiled anew, stored if the folder allows
            log.warning("compiled-kernel cache entry %s cannot be read (%s): compiling anew",
                        path, error)
            return None
        problem = _check_entry(data, key)
        if problem is None:
            header_end = data.index(b"\n", len(_MAGIC)) + 1
            return data[header_end:]
        log.warning("compiled-kernel cache entry %s is unusable (%s): removing it; the kernels "
                    "are compiled again and stored anew", path, problem)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return None

    def store(self, key: KernelKey, payload: bytes) -> Path:
        """Writes the entry of ``key`` atomically; returns its path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        header = json.dumps({"key": json.loads(key.as_json()), "bytes": len(payload),
                             "sha256": hashlib.sha256(payload).hexdigest()}, sort_keys=True)
        path = self.path(key)
        handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=f".{path.name}.",
                                             suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(_MAGIC + header.encode() + b"\n" + payload)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return path


def _check_entry(data: bytes, key: KernelKey) -> str | None:
    """Why ``data`` is not a valid entry for ``key``, or None."""
    if not data.startswith(_MAGIC):
        return "not an umadrive compiled-kernel entry"
    header_end = data.find(b"\n", len(_MAGIC))
    if header_end < 0:
        return "truncated header"
    try:
        header = json.loads(data[len(_MAGIC):header_end])
        stored_key, size, checksum = header["key"], header["bytes"], header["sha256"]
    except (ValueError, KeyError, TypeError):
        return "damaged header"
    if stored_key != json.loads(key.as_json()):
        return "written for another model, settings, device or torch version"
    payload = data[header_end + 1:]
    if len(payload) != size:
        return f"{len(payload)} payload bytes, the header says {size}"
    if hashlib.sha256(payload).hexdigest() != checksum:
        return "payload checksum mismatch"
    return None
