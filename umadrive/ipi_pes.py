"""An i-PI PES module: umadrive's backends inside i-PI's own Python driver.

For users of ``i-pi-py_driver``, with the same ``-o`` key=value habit::

    i-pi-py_driver -u -a NAME -m custom -P "$(umadrive info --pes-path)" \\
        -o template=init.extxyz,model=uma-s-1p1,task=omat,mode=turbo

Keys: ``template`` (a structure file ase.io.read reads: species and atom order),
``model`` (a checkpoint path or name, or ``ase:emt`` / ``ase:package.module:Class``;
default ``demo``), ``task``, ``charge``, ``spin``, ``mode`` (default, turbo or a
JSON file) and ``device`` (cpu, cuda, cuda:N), as the ``umadrive serve`` flags of
the same names. A batch i-PI sends (``batch_size``) is one forward pass.

``umadrive serve`` does more (several connections per model, shared memory, MPI,
status lines, a stop on SIGTERM that answers the request in flight); this module is for
setups built around ``i-pi-py_driver``. It imports i-PI, so it is loaded by i-PI
only (``-P``), never by the rest of umadrive.
"""

from __future__ import annotations

from ipi.pes.dummy import Dummy_driver

from umadrive.driver.backends import UmaOptions, make_backend
from umadrive.driver.requests import check_structure
from umadrive.protocol.units import prediction_to_wire, structure_from_wire

__DRIVER_NAME__ = "umadrive"
__DRIVER_CLASS__ = "UmadriveDriver"


class UmadriveDriver(Dummy_driver):
    """i-PI's PES interface on a umadrive backend: wire values in (cell ``h``
    (3, 3) Bohr, vectors as columns; positions (n, 3) Bohr), wire values out
    (energy Hartree, forces (n, 3) Hartree/Bohr, virial (3, 3) Hartree, extras "")."""

    def __init__(self, template: str, model: str = "demo", task: str | None = None,
                 charge: int = 0, spin: int | None = None, mode: str = "default",
                 device: str = "cpu", *args, **kwargs) -> None:
        import ase.io

        self.template = ase.io.read(template)
        self.backend = make_backend(str(model), self.template, uma=UmaOptions(
            task=task, charge=int(charge), spin=None if spin is None else int(spin),
            mode=str(mode), device=str(device)))
        super().__init__(*args, **kwargs)

    def compute(self, cell, pos):
        """One structure (arrays) or a batch (lists of arrays): one backend call."""
        batched = isinstance(cell, list)
        cells, positions = (cell, pos) if batched else ([cell], [pos])
        if len(cells) != len(positions):
            raise ValueError(f"{len(cells)} cells but {len(positions)} position arrays")
        structures = [check_structure(structure_from_wire(h, x), self.template)
                      for h, x in zip(cells, positions)]
        results = [(*prediction_to_wire(prediction, structure), "")
                   for prediction, structure in
                   zip(self.backend.compute(structures), structures)]
        return results if batched else results[0]
