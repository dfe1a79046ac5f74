"""What the driver tests with a UMA model share beyond :mod:`tests.reference`."""

from __future__ import annotations

import json
from pathlib import Path


def float64_mode(folder: Path) -> Path:
    """A ``--mode`` file: the default settings in float64."""
    path = folder / "float64.json"
    path.write_text(json.dumps({"base_precision_dtype": "float64"}))
    return path
