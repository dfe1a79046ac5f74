"""What the driver reports while it serves: a status line every ``--log-every``
steps, a summary at the end, and the same values as JSON lines
(``--log-json FILE``).

A *step* is one forward pass: every structure waiting at one moment, on any
connection, computed together.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

log = logging.getLogger("umadrive.driver")


@dataclass
class Totals:
    """Sums over a span of steps; times in seconds."""

    steps: int = 0
    requests: int = 0
    structures: int = 0
    atoms: int = 0
    wait_s: float = 0.0  # idle: waiting for the engine's next request
    receive_s: float = 0.0  # reading and checking the requests
    model_s: float = 0.0  # the backend's forward pass
    send_s: float = 0.0  # checking, encoding and delivering the replies
    started: float = field(default_factory=time.perf_counter)

    def add(self, step: StepRecord) -> None:
        self.steps += 1
        self.requests += step.requests
        self.structures += step.structures
        self.atoms += step.atoms
        self.wait_s += step.wait_s
        self.receive_s += step.receive_s
        self.model_s += step.model_s
        self.send_s += step.send_s

    def as_dict(self) -> dict:
        """The values a status line shows: counts, ms per step, atoms/s over the
        wall time of the span and over the model time alone."""
        steps = max(self.steps, 1)
        wall = time.perf_counter() - self.started
        return {
            "steps": self.steps, "requests": self.requests, "structures": self.structures,
            "atoms": self.atoms,
            "structures_per_step": round(self.structures / steps, 3),
            "ms_wait": 1e3 * self.wait_s / steps, "ms_receive": 1e3 * self.receive_s / steps,
            "ms_model": 1e3 * self.model_s / steps, "ms_send": 1e3 * self.send_s / steps,
            "wall_s": wall,
            "atoms_per_s": self.atoms / wall if wall > 0 else 0.0,
            "model_atoms_per_s": self.atoms / self.model_s if self.model_s > 0 else 0.0,
        }


@dataclass(frozen=True)
class StepRecord:
    """One step: its counts and where its time went (s)."""

    requests: int
    structures: int
    atoms: int
    wait_s: float
    receive_s: float
    model_s: float
    send_s: float


class ServeLog:
    """Collects step records and writes the status lines, events and summaries.

    every: steps between status lines (0: none). json_file: an open text file for
    JSON lines, or None. device_memory: returns the backend's device memory in
    bytes (None on CPU).
    """

    def __init__(self, *, every: int, json_file: IO[str] | None,
                 device_memory: Callable[[], int | None]) -> None:
        self._every = every
        self._json = json_file
        self._device_memory = device_memory
        self.total = Totals()
        self._span = Totals()

    def event(self, name: str, message: str, *, quiet: bool = False, **fields: object) -> None:
        """Logs ``message`` (at debug level when ``quiet``) and writes
        ``{"event": name, **fields}`` as a JSON line."""
        log.log(logging.DEBUG if quiet else logging.INFO, "%s", message)
        self._write({"event": name, **fields})

    def step(self, record: StepRecord) -> None:
        self.total.add(record)
        self._span.add(record)
        if self._every and self._span.steps >= self._every:
            self._report("status", self._span, f"steps {self.total.steps - self._span.steps + 1}-"
                                               f"{self.total.steps}")
            self._span = Totals()

    def summary(self) -> None:
        """The totals since the process started serving."""
        self._report("summary", self.total, "summary")

    def _report(self, name: str, span: Totals, label: str) -> None:
        values = span.as_dict()
        memory = self._device_memory()
        if memory is not None:
            values["device_memory_mib"] = memory / 2**20
        text = (f"{label}: {values['requests']} requests, {values['structures']} structures "
                f"({values['structures_per_step']:g} per step), {values['atoms']} atoms; "
                f"ms/step wait {values['ms_wait']:.2f} receive {values['ms_receive']:.2f} "
                f"model {values['ms_model']:.2f} send {values['ms_send']:.2f}; "
                f"{values['atoms_per_s']:.4g} atoms/s")
        if memory is not None:
            text += f"; device memory {values['device_memory_mib']:.0f} MiB"
        self.event(name, text, **values)

    def _write(self, record: dict) -> None:
        if self._json is not None:
            self._json.write(json.dumps({"time": time.time(), **record}) + "\n")
            self._json.flush()
