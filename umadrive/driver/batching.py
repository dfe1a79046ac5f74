"""The serving loop: every request waiting at one moment (one or many
connections, plain or batched layout) is checked, computed in ONE backend call,
split back and answered on its own connection."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Protocol

import ase

from umadrive.driver.backends.protocol import Backend
from umadrive.driver.connections import Gathered, Pending
from umadrive.driver.lifecycle import StopFlag
from umadrive.driver.requests import RequestError, check_structure
from umadrive.driver.stats import ServeLog, StepRecord
from umadrive.protocol import UnsendableReplyError
from umadrive.structure import Prediction, Structure

log = logging.getLogger("umadrive.driver")


class RequestPool(Protocol):
    """Where requests come from and answers go: a transport (see
    :class:`~umadrive.driver.connections.ConnectionPool`). ``outcome`` after the
    run: ``"EXIT"``, ``"EOF"`` or ``"failed"``; ``failures``: the error messages
    of the run."""

    outcome: str
    failures: list[str]

    def gather(self) -> Gathered:
        """The requests waiting now (blocks for the first); none when the run is over."""
        ...

    def deliver(self, answered: list[Pending]) -> None:
        """Hands the replies stored by ``send_predictions`` to the server."""
        ...

    def drop(self, pending: Pending, reason: str) -> None:
        """Gives up on a request without answering it."""
        ...

    def close(self) -> None:
        """Ends the run on this side."""
        ...


def serve_requests(pool: RequestPool, backend: Backend, template: ase.Atoms, *,
                   serve_log: ServeLog, stop: StopFlag, extras: bool = False,
                   pbc: tuple[bool, bool, bool] | None = None) -> None:
    """Serves until the pool has no more requests or a stop signal arrived (the
    requests already read are answered first). ``extras``: add the model name,
    step number, model time and step size to every reply's extras. ``pbc``:
    overrides the template's periodicity (see
    :func:`~umadrive.driver.requests.check_structure`)."""
    while True:
        gathered = pool.gather()
        if gathered.pending:
            _step(pool, backend, template, gathered, serve_log, extras, pbc)
        if not gathered.pending or stop.requested is not None:
            return


def _step(pool: RequestPool, backend: Backend, template: ase.Atoms, gathered: Gathered,
          serve_log: ServeLog, extras: bool, pbc: tuple[bool, bool, bool] | None) -> None:
    start = time.perf_counter()
    accepted: list[tuple[Pending, list[Structure]]] = []
    for pending in gathered.pending:
        try:
            accepted.append((pending, [check_structure(s, template, pbc=pbc)
                                       for s in pending.request.structures]))
        except RequestError as error:
            pool.drop(pending, f"{error}")
    structures = [s for _, group in accepted for s in group]
    if not structures:
        return
    checked = time.perf_counter()
    try:
        predictions = backend.compute(structures)
    except Exception as error:  # e.g. out of memory: report it with the size that caused it
        sizes = sorted({s.n_atoms for s in structures})
        for pending, _ in accepted:
            pool.drop(pending, f"the model failed on {len(structures)} structures of {sizes} "
                               f"atoms ({sum(s.n_atoms for s in structures)} in all): "
                               f"{type(error).__name__}: {error}")
        return
    computed = time.perf_counter()
    model_s = computed - checked
    if extras:
        step_extras = {"model": backend.name, "step": serve_log.total.steps + 1,
                       "model_ms": 1e3 * model_s, "structures_in_step": len(structures)}
        predictions = [_with_extras(p, step_extras) for p in predictions]
    answered = []
    offset = 0
    for pending, group in accepted:
        mine = predictions[offset:offset + len(group)]
        offset += len(group)
        try:
            pending.connection.send_predictions(mine)
        except UnsendableReplyError as error:
            pool.drop(pending, f"{error}")
            continue
        answered.append(pending)
    pool.deliver(answered)
    serve_log.step(StepRecord(
        requests=len(accepted), structures=len(structures),
        atoms=sum(s.n_atoms for s in structures), wait_s=gathered.wait_s,
        receive_s=gathered.receive_s + (checked - start), model_s=model_s,
        send_s=time.perf_counter() - computed))


def _with_extras(prediction: Prediction, step_extras: dict) -> Prediction:
    return dataclasses.replace(prediction, extras={**step_extras, **(prediction.extras or {})})
