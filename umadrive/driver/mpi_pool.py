"""The MPI side of the driver (``--mpi``): this rank of i-PI's ``<ffmpi>`` job as
a :class:`~umadrive.driver.batching.RequestPool`.

i-PI hands each driver rank one request (up to ``batch_size`` structures) at a
time and waits for its answer with no timeout and no way to hand it to another
rank. So when this side gives up on a request (refused, the model failed, the
protocol broken) the whole job is aborted: the alternative is an i-PI waiting
forever. A stop signal does not abort: ``mpiexec`` forwards it to i-PI as well,
which ends the run with EXIT; the request in flight is answered first (a rank
waiting for work notices the signal at i-PI's next message).
"""

from __future__ import annotations

import logging
import time

from umadrive.driver.connections import Gathered, Pending
from umadrive.mpich_shm import unlink_mapped_segments
from umadrive.protocol.errors import ProtocolError
from umadrive.protocol.mpi import MpiConnection

log = logging.getLogger("umadrive.driver")

# MPICH's launcher stops forwarding a job's output once an abort has killed it,
# which can swallow the lines saying why: give it this long to pass them on.
_FORWARD_OUTPUT_S = 0.5


class MpiPool:
    """One MPI driver rank. ``outcome`` after the run: ``"EXIT"`` (i-PI said so)
    or ``"failed"`` (the job is aborted on :meth:`close`)."""

    def __init__(self, connection: MpiConnection) -> None:
        self._connection = connection
        self.outcome = "EXIT"
        self.failures: list[str] = []
        self._over = False

    def gather(self) -> Gathered:
        """Waits for i-PI's next WORK (a stop signal is seen once it has come);
        no requests once i-PI sent EXIT or the run failed."""
        start = time.perf_counter()
        pending = []
        if not self._over:
            try:
                request = self._connection.next_request()
            except ProtocolError as error:
                self._fail(f"{error}")
            else:
                if request is None:
                    self._over = True
                else:
                    pending.append(Pending(self._connection, request))
        return Gathered(pending, wait_s=time.perf_counter() - start, receive_s=0.0)

    def deliver(self, answered: list[Pending]) -> None:
        """Nothing left to do: ``send_predictions`` has sent RESULT and EXTRA."""

    def drop(self, pending: Pending, reason: str) -> None:
        """Gives up on the run: i-PI cannot hand the request to another rank."""
        self._fail(f"{reason}; not answering {pending.connection.peer}")

    def close(self) -> None:
        """Aborts the MPI job after a failure; nothing to do after EXIT or a stop."""
        if self.outcome == "failed":
            log.error("aborting the MPI job, i-PI included: i-PI would wait forever for "
                      "this rank's answer")
            for path in unlink_mapped_segments():  # an aborted job never finalizes to do it
                log.info("removed %s (MPICH's shared memory of this job)", path)
            time.sleep(_FORWARD_OUTPUT_S)
            self._connection.abort(1)
        self._connection.close()

    def _fail(self, message: str) -> None:
        log.error("%s", message)
        self.failures.append(message)
        self.outcome = "failed"
        self._over = True
