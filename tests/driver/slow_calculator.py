"""EMT that takes its time and says when it starts: lets a test send a signal
(or kill the engine) while the driver is computing a request."""

import time
from pathlib import Path

from ase.calculators.emt import EMT


class SlowEMT(EMT):
    """EMT that appends a line to ``marker`` when a calculation starts, then
    sleeps ``delay`` seconds before computing."""

    def __init__(self, marker: str, delay: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.marker = Path(marker)
        self.delay = delay

    def calculate(self, *args, **kwargs):
        with self.marker.open("a") as file:
            file.write("started\n")
        time.sleep(self.delay)
        super().calculate(*args, **kwargs)
