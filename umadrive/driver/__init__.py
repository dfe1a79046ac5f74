"""The long-running driver: answers an MD engine's force requests with a
backend (a UMA model or any ASE calculator). :func:`serve` is what
``umadrive serve`` runs; Python scripts and notebooks may call it too."""

from umadrive.driver.backends import Backend, UmaOptions, make_backend
from umadrive.driver.lifecycle import StopFlag
from umadrive.driver.options import ServeOptions, ServeOptionsError
from umadrive.driver.serving import serve

__all__ = ["Backend", "ServeOptions", "ServeOptionsError", "StopFlag", "UmaOptions",
           "make_backend", "serve"]
