"""The driver side: connect to a server (i-PI, ASE, the LAMMPS bridge) and run
the client state machine.

States: NEEDINIT -(INIT)-> READY -(POSDATA)-> computing -(send_predictions)->
HAVEDATA -(GETFORCE)-> READY. STATUS is answered with the state's name.
POSDATA is also accepted without INIT (ASE and LAMMPS never send INIT).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from umadrive.protocol import messages as msg
from umadrive.protocol.addresses import DEFAULT_PREFIX, connect_with_retry, resolve_address
from umadrive.protocol.errors import ProtocolError, UnsendableReplyError
from umadrive.protocol.units import NO_STRESS_EXTRA, prediction_to_wire, structure_from_wire
from umadrive.structure import Prediction, Structure

InitInfo = msg.InitInfo

_DRAIN_READS = 64  # at most 4 MiB of unread input is drained on close
_NEEDINIT, _READY, _COMPUTING, _HAVEDATA = "NEEDINIT", "READY", "computing", "HAVEDATA"
_STATUS_REPLY = {_NEEDINIT: msg.NEEDINIT, _READY: msg.READY, _HAVEDATA: msg.HAVEDATA}


@dataclass(frozen=True)
class Request:
    """One POSDATA: ``structures`` holds one structure (plain layout) or
    ``init.batch_size`` structures (batched layout). ``init`` is None when the
    server never sent INIT."""

    structures: list[Structure]
    init: InitInfo | None
    batched: bool


class DriverConnection:
    """One connection to a server. Use :func:`connect` to open it.

    max_atoms: caps the atoms a POSDATA may announce (nat times the batch size).
    expected_atoms: the atom count every request must have (the template's);
        another ``nat`` is refused before its positions are read.
    """

    def __init__(self, channel: msg.Channel, *, max_atoms: int = msg.DEFAULT_MAX_ATOMS,
                 expected_atoms: int | None = None) -> None:
        if max_atoms < 1:
            raise ValueError(f"max_atoms={max_atoms} must be at least 1")
        if expected_atoms is not None and expected_atoms < 1:
            raise ValueError(f"expected_atoms={expected_atoms} must be at least 1 (or None)")
        self._channel = channel
        self._max_atoms = max_atoms
        self._expected_atoms = expected_atoms
        self._state = _NEEDINIT
        self._init: InitInfo | None = None
        self._request: Request | None = None
        self._reply: bytes | None = None
        self.end_reason: str | None = None  # "EXIT" or "EOF" once next_request returned None

    @property
    def peer(self) -> str:
        return self._channel.peer

    def fileno(self) -> int:
        return self._channel.fileno()

    def close(self) -> None:
        """Closes with a clean end of stream. Unread input (say the GETFORCE of a
        request that is refused) is drained first: closing over unread bytes
        sends a reset, which kills i-PI 3.3's polling thread and hangs it, while
        an end of stream makes i-PI drop this driver and requeue the request."""
        sock = self._channel.sock
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            for _ in range(_DRAIN_READS):
                if not sock.recv(1 << 16):
                    break
        except OSError:
            pass  # nothing left to drain, or the peer is gone already
        sock.close()

    def __enter__(self) -> DriverConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def init(self) -> InitInfo | None:
        """What the server's INIT said; None until it sent one (ASE and LAMMPS never do)."""
        return self._init

    @property
    def state(self) -> str:
        """``NEEDINIT``, ``READY``, ``computing`` (a request awaits
        :meth:`send_predictions`) or ``HAVEDATA`` (the reply awaits GETFORCE)."""
        return self._state

    def next_request(self) -> Request | None:
        """Answers STATUS, INIT and GETFORCE until POSDATA arrives and returns it.
        Returns None on EXIT, or when the server closes while no exchange is open
        (``end_reason`` says which). Raises :class:`ProtocolError` otherwise."""
        while self.end_reason is None:
            request = self.read_message()
            if request is not None:
                return request
        return None

    def read_message(self) -> Request | None:
        """Reads and answers one message (blocking until it has arrived). Returns
        the :class:`Request` when it was POSDATA, else None; ``end_reason`` is set
        once the server sent EXIT or closed while no exchange was open. For
        drivers that wait on many connections with :mod:`selectors`."""
        if self._state == _COMPUTING:
            raise RuntimeError("send_predictions() must answer the previous request first")
        if self.end_reason is not None:
            raise RuntimeError(f"the server ended this connection ({self.end_reason})")
        channel = self._channel
        header = channel.read_header(f"a header in state {self._state}")
        if header is None:
            if self._state == _HAVEDATA:
                raise ProtocolError(
                    channel.peer, "GETFORCE for the computed results", "end of stream"
                )
            self.end_reason = "EOF"
        elif header == msg.STATUS:
            channel.send(_STATUS_REPLY[self._state])
        elif header == msg.POSDATA and self._state != _HAVEDATA:
            return self._read_posdata()
        elif header == msg.GETFORCE and self._state == _HAVEDATA:
            reply, self._reply, self._request = self._reply, None, None
            self._state = _READY
            channel.send(reply)
        elif header == msg.INIT and self._state != _HAVEDATA:
            self._init = msg.read_init(channel)
            self._state = _READY
        elif header == msg.EXIT:
            self.end_reason = "EXIT"
        else:
            allowed = {
                _NEEDINIT: "STATUS, INIT, POSDATA or EXIT",
                _READY: "STATUS, INIT, POSDATA or EXIT",
                _HAVEDATA: "STATUS, GETFORCE or EXIT",
            }[self._state]
            raise ProtocolError(
                channel.peer, f"{allowed} in state {self._state}", msg.header_name(header)
            )
        return None

    def _read_posdata(self) -> Request:
        batch_size = self._init.batch_size if self._init is not None else 1
        wire = self._receive_structures(batch_size)
        structures = [structure_from_wire(w.h, w.positions) for w in wire]
        self._request = Request(structures=structures, init=self._init, batched=batch_size > 1)
        self._state = _COMPUTING
        return self._request

    def _receive_structures(self, batch_size: int) -> list[msg.WireStructure]:
        """The structures of a POSDATA whose header was just read. Transports
        that keep the arrays elsewhere (shared memory) override this."""
        return msg.read_posdata(self._channel, batch_size=batch_size, max_atoms=self._max_atoms,
                                expected_atoms=self._expected_atoms)

    def _encode_reply(self, results: list[msg.WireResult], *, batched: bool) -> bytes:
        """The FORCEREADY message for ``results``; overridden like
        :meth:`_receive_structures`."""
        return msg.encode_forceready(results, batched=batched)

    def send_predictions(self, predictions: Sequence[Prediction]) -> None:
        """Answers the request returned last: checks the count, every atom count,
        finiteness and the extras first (raising :class:`UnsendableReplyError`
        and sending nothing), then holds the reply until GETFORCE asks for it."""
        request = self._request
        if self._state != _COMPUTING or request is None:
            raise RuntimeError("send_predictions() called with no request waiting")
        results = wire_results(predictions, request.structures)
        self._reply = self._encode_reply(results, batched=request.batched)
        self._state = _HAVEDATA


def wire_results(
    predictions: Sequence[Prediction], structures: Sequence[Structure]
) -> list[msg.WireResult]:
    """The wire form of one prediction per structure, checked before anything is
    sent: the count, every atom count, finiteness and the extras. A periodic
    structure's prediction without a stress goes out with a zero virial marked
    :data:`~umadrive.protocol.units.NO_STRESS_EXTRA` in its extras. Raises
    :class:`UnsendableReplyError` naming the structure and the value."""
    if len(predictions) != len(structures):
        raise UnsendableReplyError(
            f"{len(predictions)} predictions for a request of {len(structures)} structures"
        )
    results = []
    for index, (prediction, structure) in enumerate(zip(predictions, structures)):
        shape = np.shape(prediction.forces)
        if shape != (structure.n_atoms, 3):
            raise UnsendableReplyError(
                f"structure {index}: forces of shape {shape}, the request has "
                f"{structure.n_atoms} atoms (expected ({structure.n_atoms}, 3))"
            )
        energy, forces, virial = prediction_to_wire(prediction, structure)
        if not (np.isfinite(energy) and np.all(np.isfinite(forces))
                and np.all(np.isfinite(virial))):
            raise UnsendableReplyError(
                f"structure {index}: the prediction holds non-finite values "
                f"(energy {prediction.energy}, {np.count_nonzero(~np.isfinite(forces))} "
                "non-finite force components or a non-finite stress); not sent"
            )
        extras = prediction.extras
        if prediction.stress is None and structure.volume > 0.0:  # the zero virial is no value
            extras = {**(extras or {}), NO_STRESS_EXTRA: True}
        results.append(msg.WireResult(energy, forces, virial, encode_extras(extras)))
    return results


def encode_extras(extras: dict | None) -> bytes:
    """Extras as a JSON object without a ``raw`` key (i-PI adds ``raw`` itself and
    crashes on a duplicate), or empty."""
    if not extras:
        return b""
    if not isinstance(extras, dict) or "raw" in extras:
        raise UnsendableReplyError(
            f"extras must be a dict without a 'raw' key (i-PI reserves it); got {extras!r:.200}"
        )
    try:
        return json.dumps(extras, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as error:
        raise UnsendableReplyError(f"extras are not finite JSON: {error}") from error


def connect(
    *,
    unix: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    host: str | None = None,
    port: int | None = None,
    timeout: float = 60.0,
    max_atoms: int = msg.DEFAULT_MAX_ATOMS,
    expected_atoms: int | None = None,
    interrupt: msg.Interrupt | None = None,
) -> DriverConnection:
    """Connects to the server at ``prefix + unix`` or ``host:port``, retrying for
    up to ``timeout`` seconds while it is not listening yet. ``max_atoms`` caps
    the ``nat`` a POSDATA may announce (times the batch size); ``expected_atoms``,
    when given, is the only ``nat`` accepted; ``interrupt``: reads give up once it
    asks for a stop and the server stays silent (see :class:`~umadrive.protocol.
    messages.Channel`)."""
    address = resolve_address(unix=unix, prefix=prefix, host=host, port=port)
    sock = connect_with_retry(address, timeout)
    return DriverConnection(msg.Channel(sock, f"server {address}", interrupt=interrupt),
                            max_atoms=max_atoms, expected_atoms=expected_atoms)
