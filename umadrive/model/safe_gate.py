"""The gate in front of loaders that unpickle a checkpoint with full pickle.

fairchem-core loads a checkpoint with ``torch.load(..., weights_only=False)``:
whatever callable the file's pickle names runs, with the file's arguments.
:func:`check_checkpoint` reads the file first with umadrive's restricted
unpickler (:mod:`umadrive.model._unpickle`), which maps the globals an
official UMA checkpoint uses onto inert stand-ins and refuses every other one.
A file it cannot read completely is refused too: the gate fails closed.

This is the only protection: the gate checks the file as it is when called,
and fairchem reads the same path again later (at load, and when it falls back
to another model variant), so the file must not be writable by anyone you do
not trust.
"""

from __future__ import annotations

import os

from umadrive.model._unpickle import UnpickleRefused, read_torch_zip


class UnsafeCheckpointError(ValueError):
    """A checkpoint the restricted unpickler refuses; the message names why
    (for a foreign global: ``module.name``)."""


def check_checkpoint(path: str | os.PathLike) -> None:
    """Reads the torch zip checkpoint at ``path`` with the restricted unpickler;
    raises :class:`UnsafeCheckpointError` unless every global its pickle names
    is on the allowlist and every tensor record is well formed."""
    name = os.fspath(path)
    try:
        read_torch_zip(name)
    except UnpickleRefused as error:
        raise UnsafeCheckpointError(
            f"refusing checkpoint {name}: {error}. umadrive reads every checkpoint with "
            "its restricted unpickler before a full-pickle loader (fairchem) sees it"
        ) from None
    except OSError:
        raise
    except Exception as error:  # not a zip, a damaged pickle, ...: nothing was run, refuse
        raise UnsafeCheckpointError(
            f"refusing checkpoint {name}: the restricted unpickler cannot read it "
            f"({type(error).__name__}: {error}); only torch zip checkpoints in the "
            "official UMA format are passed on to fairchem"
        ) from None
