"""Graceful stop: SIGTERM and SIGINT (or :meth:`StopFlag.set` from another
thread) ask the driver to finish what it is doing instead of killing it
mid-request (i-PI 3.3 hangs forever when a driver dies between POSDATA and
FORCEREADY with unread bytes; it requeues the request after a clean end of
stream).

A stop always ends :class:`StopSignal`'s process within a bounded time: waits
for a request end at once; a read the server leaves half done is given up after
:data:`~umadrive.protocol.messages.STOP_PATIENCE_S` of silence; the request being
computed is answered first, unless a second signal comes or ``grace_s`` passes:
then a watchdog thread closes every connection cleanly (the server sees an end
of stream, never a reset) and ends the process with :data:`FORCED_EXIT_STATUS`
without answering.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("umadrive.driver")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
FORCED_EXIT_STATUS = 3
"""Exit status of a process ended without answering the request in flight (a
second stop signal, or the grace period after the first one ran out)."""


class StopFlag:
    """Asks a running :func:`umadrive.driver.serve` to stop, from any thread:
    :meth:`set` sets :attr:`requested` and wakes whoever waits on
    :meth:`fileno` (a selector) or in :meth:`wait`. The request in flight is
    answered first. Close it (or use it as a context manager) when done."""

    def __init__(self) -> None:
        self.requested: str | None = None  # why the stop was asked for, once it was
        self.on_forced_exit: list[Callable[[], None]] = []  # closers run before a forced exit
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
        self._request(reason)

    def _request(self, reason: str) -> None:
        if self.requested is None:
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
    signal handlers).

    grace_s: after the first signal, seconds the request in flight may take
        before the process is ended without answering it (inf: no limit). A
        second signal ends it at once. Either way the ``on_forced_exit``
        closers run first, then ``os._exit(FORCED_EXIT_STATUS)``.

    The signals are counted by a watchdog thread woken through
    :func:`signal.set_wakeup_fd`, which the C-level handler writes at once: the
    main thread may be inside a long computation that runs no Python handler.
    """

    def __init__(self, *, grace_s: float = float("inf")) -> None:
        super().__init__()
        if not grace_s >= 0:
            raise ValueError(f"grace_s={grace_s}: expected 0 s or more (inf: no limit)")
        self.grace_s = grace_s
        self._previous: dict[int, object] = {}
        self._previous_wakeup_fd = -1
        self._signal_read, self._signal_write = socket.socketpair()
        self._signal_write.setblocking(False)
        self._watchdog = threading.Thread(target=self._watch, name="umadrive stop watchdog",
                                          daemon=True)

    def __enter__(self) -> StopSignal:
        for number in _STOP_SIGNALS:
            self._previous[number] = signal.signal(number, _count_in_watchdog)
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._signal_write.fileno(),
                                                        warn_on_full_buffer=False)
        self._watchdog.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._signal_write.send(b"\0")  # not a signal number: the watchdog's end
        self._watchdog.join()
        self._signal_read.close()
        self._signal_write.close()
        self.close()

    def _watch(self) -> None:
        deadline = float("inf")
        while True:
            timeout = None if deadline == float("inf") else max(deadline - time.monotonic(), 0.0)
            with selectors.DefaultSelector() as selector:
                selector.register(self._signal_read, selectors.EVENT_READ)
                ready = selector.select(timeout)
            if not ready:
                self._force_exit(f"the request in flight did not end within the "
                                 f"{self.grace_s:g} s grace after {self.requested}")
            for number in self._signal_read.recv(64):
                if number == 0:
                    return
                if number not in _STOP_SIGNALS:
                    continue
                name = signal.Signals(number).name
                if self.requested is None:
                    grace = "" if self.grace_s == float("inf") else f" (at most {self.grace_s:g} s)"
                    log.info("%s received: finishing the request in flight, then closing%s; "
                             "another SIGTERM/SIGINT ends the process at once without answering",
                             name, grace)
                    self._request(name)
                    deadline = time.monotonic() + self.grace_s
                else:
                    self._force_exit(f"a second stop signal ({name})")

    def _force_exit(self, why: str) -> None:
        log.error("%s: closing the connections without answering and exiting with status %d",
                  why, FORCED_EXIT_STATUS)
        for closer in list(self.on_forced_exit):
            try:
                closer()
            except Exception:  # noqa: BLE001 - the process ends next whatever failed here
                pass
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(FORCED_EXIT_STATUS)


def _count_in_watchdog(number: int, frame: FrameType | None) -> None:
    """The Python-level handler: nothing to do, the C-level handler has already
    written the signal number to the watchdog's wake-up socket."""
