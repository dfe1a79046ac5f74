"""Graceful stop: SIGTERM and SIGINT (or :meth:`StopFlag.set` from another
thread) ask the driver to finish what it is doing instead of killing it
mid-request (i-PI 3.3 hangs forever when a driver dies between POSDATA and
FORCEREADY)."""

from __future__ import annotations

import logging
import selectors
import signal
import socket
from types import FrameType

log = logging.getLogger("umadrive.driver")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopFlag:
    """Asks a running :func:`umadrive.driver.serve` to stop, from any thread:
    :meth:`set` sets :attr:`requested` and wakes whoever waits on
    :meth:`fileno` (a selector) or in :meth:`wait`. The request in flight is
    answered first. Close it (or use it as a context manager) when done."""

    def __init__(self) -> None:
        self.requested: str | None = None  # why the stop was asked for, once it was
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)

    def fileno(self) -> int:
        """Readable once a stop was asked for (register it with a selector)."""
        return self._wake_read.fileno()

    def set(self, reason: str = "a stop request") -> None:
        """Asks the driver to finish the request in flight, then close."""
        if self.requested is None:
            log.info("%s: finishing the request in flight, then closing", reason)
            self.requested = reason
        try:
            self._wake_write.send(b"\0")
        except OSError:  # the wake-up byte of an earlier call is still unread, or closed
            pass

    def is_set(self) -> bool:
        return self.requested is not None

    def wait(self, seconds: float) -> bool:
        """Sleeps up to ``seconds`` unless a stop is asked for; True if one was."""
        if self.requested is None:
            with selectors.DefaultSelector() as selector:
                selector.register(self._wake_read, selectors.EVENT_READ)
                selector.select(seconds)
        return self.requested is not None

    def close(self) -> None:
        self._wake_read.close()
        self._wake_write.close()

    def __enter__(self) -> StopFlag:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class StopSignal(StopFlag):
    """A :class:`StopFlag` set by SIGTERM/SIGINT while entered. Leaving restores
    the previous handlers. Only the main thread may enter it (a Python rule for
    signal handlers)."""

    def __init__(self) -> None:
        super().__init__()
        self._previous: dict[int, object] = {}
        self._previous_wakeup_fd = -1

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
        self.close()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        name = signal.Signals(number).name
        if self.requested is None:
            log.info("%s received: finishing the request in flight, then closing", name)
        self.requested = name
