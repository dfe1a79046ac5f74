"""The driver embedded in the test process: :func:`umadrive.driver.serve` in a thread."""

from __future__ import annotations

import threading

from umadrive.driver import serve


class ServeThread:
    """``serve(...)`` in a thread; :meth:`join` returns its status (or raises what it raised)."""

    def __init__(self, *args, **kwargs) -> None:
        self.status: int | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=args, kwargs=kwargs, daemon=True)
        self._thread.start()

    def _run(self, *args, **kwargs) -> None:
        try:
            self.status = serve(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - handed to join()
            self.error = error

    def join(self, timeout: float = 120) -> int:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"serve() still running after {timeout} s"
        if self.error is not None:
            raise self.error
        return self.status
