"""Progress for long commands, with tqdm: one updating line on a terminal, and
when the output is piped or logged, a plain line every ``every_s`` seconds (and a
last one at the end) instead of carriage returns."""

from __future__ import annotations

import sys
import time
from typing import IO

from tqdm import tqdm


class Progress:
    """Progress of ``total`` units (None: unknown, elapsed time only).

    desc: what is progressing ("MD steps"). unit: one unit's name ("step").
    file: where to write (default stdout).
    every_s: seconds between plain lines when ``file`` is not a terminal.
    """

    def __init__(self, total: int | None, desc: str, *, unit: str = "it",
                 file: IO[str] | None = None, every_s: float = 10.0) -> None:
        if every_s <= 0:
            raise ValueError(f"every_s={every_s} must be > 0")
        self.file = file or sys.stdout
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.n = 0
        self.postfix = ""
        self._start = time.monotonic()
        self._last_line = self._start
        self._last_shown: tuple[int, str] | None = None
        self._bar = (tqdm(total=total, desc=desc, unit=unit, file=self.file, dynamic_ncols=True)
                     if self.file.isatty() else None)

    def update_to(self, n: int, postfix: str = "") -> None:
        """Progress is now ``n`` units; ``postfix``: a short status shown after it."""
        self.n, self.postfix = n, postfix
        if self._bar is not None:
            self._bar.n = n
            self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.refresh()
        elif time.monotonic() - self._last_line >= self.every_s:
            self._write_line()

    def restart_clock(self) -> None:
        """Count elapsed time, rate and ETA from now (e.g. once a warm-up is over);
        the next :meth:`update_to` sets the count."""
        self._start = time.monotonic()
        if self._bar is not None:
            self._bar.reset(total=self.total)  # tqdm's restart: count 0, clock now

    def elapsed_s(self) -> float:
        """Seconds since the start (or the last :meth:`restart_clock`)."""
        return time.monotonic() - self._start

    def line(self) -> str:
        """The status as one plain line (tqdm's meter: count, rate, elapsed, ETA)."""
        return tqdm.format_meter(self.n, self.total, time.monotonic() - self._start,
                                 prefix=self.desc, unit=self.unit, postfix=self.postfix or None,
                                 ascii=True)

    def close(self) -> None:
        """The final state: the bar's last refresh, or one last plain line."""
        if self._bar is not None:
            self._bar.close()
        elif self._last_shown != (self.n, self.postfix):
            self._write_line()

    def _write_line(self) -> None:
        self._last_line = time.monotonic()
        self._last_shown = (self.n, self.postfix)
        print(self.line(), file=self.file, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
