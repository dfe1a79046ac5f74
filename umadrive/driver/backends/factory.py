"""``make_backend``: a ``--model`` spec to a :class:`Backend`.

Specs: a UMA checkpoint path or model name (:mod:`umadrive.driver.backends.uma`),
``fairchem:NAME_OR_PATH`` (the same checkpoint run by fairchem-core,
:mod:`umadrive.driver.backends.fairchem`), ``ase:emt`` (ASE's EMT) and
``ase:package.module:Class`` (any ASE calculator, built with the keyword
arguments given).
"""

from __future__ import annotations

import ase

from umadrive.driver.backends.ase_calculator import AseBackend, ase_calculator
from umadrive.driver.backends.options import UmaOptions
from umadrive.driver.backends.protocol import Backend


def make_backend(spec: str, template: ase.Atoms, *, uma: UmaOptions | None = None,
                 **calculator_kwargs: object) -> Backend:
    """The backend for a ``--model`` spec: ``ase:...`` builds an ASE calculator
    with ``calculator_kwargs``; ``fairchem:...`` and anything else is a UMA
    checkpoint path or model name, loaded with ``uma`` (defaults:
    :class:`UmaOptions`) by fairchem-core or by umadrive's own model."""
    kind, _, rest = spec.partition(":")
    if uma is not None and uma.memory_budget is not None and kind in ("ase", "fairchem"):
        raise ValueError(f"--memory-budget applies to umadrive's own UMA backend only, not to "
                         f"--model {spec!r} (fairchem-core and ASE calculators manage their own "
                         "memory); drop the flag")
    if kind == "ase":
        if not rest:
            raise ValueError(f"--model {spec!r}: expected 'ase:emt' or 'ase:package.module:Class'")
        return AseBackend(ase_calculator(rest, calculator_kwargs), template, name=spec)
    if calculator_kwargs:
        raise ValueError(f"--model-kwargs {calculator_kwargs} apply to ASE calculators only "
                         f"('ase:...'), not to the UMA model {spec!r}")
    if kind == "fairchem":
        if not rest:
            raise ValueError(f"--model {spec!r}: expected 'fairchem:NAME' or 'fairchem:PATH'")
        from umadrive.driver.backends.fairchem import FairchemBackend  # imports torch

        return FairchemBackend.load(rest, template, uma or UmaOptions())
    from umadrive.driver.backends.uma import UmaBackend  # imports torch: only when asked

    return UmaBackend.load(spec, template, uma or UmaOptions())
