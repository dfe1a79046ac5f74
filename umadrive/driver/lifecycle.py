"""Graceful stop: SIGTERM and SIGINT ask the driver to finish what it is doing
instead of killing it mid-request (i-PI 3.3 hangs forever when a driver dies
between POSDATA and FORCEREADY)."""

from __future__ import annotations

import logging
import selectors
import signal
import socket
from types import FrameType

log = logging.getLogger("umadrive.driver")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignal:
    """While entered, SIGTERM/SIGINT set :attr:`requested` and wake whoever waits
    on :meth:`fileno` (a selector) or in :meth:`wait`. Leaving restores the
    previous handlers. Only the main thread may enter it (a Python rule for
    signal handlers)."""

    def __init__(self) -> None:
        self.requested: str | None = None  # the signal's name once one arrived
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._previous: dict[int, object] = {}
        self._previous_wakeup_fd = -1

    def fileno(self) -> int:
        """Readable once a stop signal arrived (register it with a selector)."""
        return self._wake_read.fileno()

    def __enter__(self) -> StopSignal:
        for number in _STOP_SIGNALS:
            self._previous[number] = signal.signal(number, self._handle)
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._wake_write.fileno(),
                                                        warn_on_full_buffer=False)
        return self

    def __exit__(self, *exc_info: object) -> None:
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._wake_read.close()
        self._wake_write.close()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        name = signal.Signals(number).name
        if self.requested is None:
            log.info("%s received: finishing the request in flight, then closing", name)
        self.requested = name

    def wait(self, seconds: float) -> bool:
        """Sleeps up to ``seconds`` unless a stop signal arrives; True if one did."""
        if self.requested is None:
            with selectors.DefaultSelector() as selector:
                selector.register(self._wake_read, selectors.EVENT_READ)
                selector.select(seconds)
        return self.requested is not None
