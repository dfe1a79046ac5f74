"""The one exception type of the LAMMPS bridge."""

from __future__ import annotations


class LammpsInputError(ValueError):
    """A LAMMPS input the bridge cannot serve: the message names the value, the
    limit and the fix. Raised before any MD step runs whenever that is possible."""
