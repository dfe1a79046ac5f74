"""What computes the answers: a :class:`Backend` turns structures into
predictions. :func:`make_backend` maps a ``--model`` spec to one (a UMA
checkpoint, or any ASE calculator)."""

from umadrive.driver.backends.factory import make_backend
from umadrive.driver.backends.options import UmaOptions
from umadrive.driver.backends.protocol import Backend

__all__ = ["Backend", "UmaOptions", "make_backend"]
