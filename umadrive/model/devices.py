"""The torch device a model loads onto: chosen when none is given, checked when
one is, so that a CUDA request on a machine without CUDA is a clear error rather
than torch's bare ``AssertionError``."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


class DeviceUnavailableError(ValueError):
    """A device torch cannot use here (no CUDA build, no GPU, index too high)."""


def pick_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a checked :class:`torch.device`; None picks ``cuda`` when
    torch sees a GPU, else ``cpu``, and logs (warning level) which it chose."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        log.warning("device was not given: using %s (pass device='cpu' or 'cuda' to choose)",
                    device)
    return check_device(device)


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`, refused unless torch can use it."""
    try:
        checked = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise DeviceUnavailableError(f"device={device!r} is not a torch device ({error}); "
                                     "use 'cpu', 'cuda' or 'cuda:N'") from None
    if checked.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise DeviceUnavailableError(
                f"device={device!r}, but torch {torch.__version__} was built without CUDA; "
                "use device='cpu', or install a CUDA build of torch (README, 'Installing torch')")
        count = torch.cuda.device_count()
        if count == 0:
            raise DeviceUnavailableError(
                f"device={device!r}, but torch {torch.__version__} sees no CUDA device (check "
                "nvidia-smi and CUDA_VISIBLE_DEVICES); use device='cpu'")
        if checked.index is not None and checked.index >= count:
            raise DeviceUnavailableError(
                f"device={device!r}: only cuda:0..cuda:{count - 1} exist here")
    return checked
