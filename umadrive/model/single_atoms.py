"""Single isolated atoms for models that cannot evaluate them (UMA 1.0 / 1.1).

A lone atom without periodic images has no edges; UMA 1.2+ checkpoints say
``supports_single_atoms`` and are evaluated as they are. For the others fairchem
2.24 answers such a system from isolated-atom DFT energies published with the
models (``references/iso_atom_elem_refs.yaml`` in facebook/UMA): per task
``<task>_elem_refs``, a map Z -> energy (eV), or Z -> {charge: energy} where the
charge matters (omol); the spin is ignored, forces and stress are zero, and the
energy is the tabulated value in float32 (as fairchem returns it). umadrive does
the same, reading the file from the caches (:func:`~umadrive.model.names.find_reference_file`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from umadrive.model.names import (
    HF_REPO, ISOLATED_ATOM_REFERENCES, find_reference_file, umadrive_cache)


class IsolatedAtomError(ValueError):
    """No isolated-atom energy for a lone atom; the message says which file or entry."""


def is_isolated_atom(numbers: np.ndarray, pbc: np.ndarray) -> bool:
    """A system of one atom with no periodic direction (fairchem's criterion)."""
    return len(numbers) == 1 and not np.any(pbc)


class IsolatedAtomEnergies:
    """The isolated-atom energies of one reference file, looked up per task."""

    def __init__(self, path: Path) -> None:
        import yaml

        with open(path, encoding="utf-8") as stream:
            content = yaml.safe_load(stream)
        if not isinstance(content, dict):
            raise IsolatedAtomError(f"{path}: expected a mapping of '<task>_elem_refs' entries")
        self.path = path
        self.tables = {str(key).removesuffix("_elem_refs"): value
                       for key, value in content.items() if isinstance(value, dict)}

    @classmethod
    def from_cache(cls) -> "IsolatedAtomEnergies":
        """The file from the caches; IsolatedAtomError saying where to put it if absent."""
        path, searched = find_reference_file()
        if path is None:
            looked = "\n  ".join(str(p) for p in searched)
            raise IsolatedAtomError(
                f"this model (UMA 1.0/1.1) cannot evaluate a single atom without periodic "
                f"images; like fairchem, umadrive then uses the isolated-atom energies of "
                f"{ISOLATED_ATOM_REFERENCES}. Put that file (https://huggingface.co/{HF_REPO}, "
                f"file references/{ISOLATED_ATOM_REFERENCES}) into {umadrive_cache()}/ "
                f"(or set UMADRIVE_CACHE), or use a UMA 1.2+ model. Looked for:\n  {looked}")
        return cls(path)

    def energy(self, task: str, number: int, charge: int) -> float:
        """eV: the energy of an isolated atom of atomic number ``number`` and total
        ``charge`` for ``task``, rounded to float32 as fairchem returns it."""
        table = self.tables.get(task)
        if table is None:
            raise IsolatedAtomError(f"{self.path} has no isolated-atom energies for task "
                                    f"{task!r} (it has {sorted(self.tables)})")
        entry = table.get(number)
        if isinstance(entry, dict):
            entry = entry.get(charge)
        if entry is None:
            raise IsolatedAtomError(f"{self.path} has no isolated-atom energy for Z={number} "
                                    f"with charge {charge} in task {task!r}")
        return float(np.float32(entry))
