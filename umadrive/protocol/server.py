"""The server side: listen, accept one driver, send structures, collect results.

Used by the tests, the benchmarks and the LAMMPS bridge (where LAMMPS drives and
umadrive answers). Exchanges are consolidated like i-PI 3.3's default: POSDATA
and GETFORCE go out in one ``sendall``, FORCEREADY comes back.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence

from umadrive.protocol import messages as msg
from umadrive.protocol.addresses import DEFAULT_PREFIX, Address, listen, resolve_address
from umadrive.protocol.errors import ProtocolError
from umadrive.protocol.units import prediction_from_wire, structure_to_wire
from umadrive.structure import Prediction, Structure


class ForceServer:
    """Listens on ``prefix + unix`` or ``host:port`` (``port=0`` picks a free one,
    see :attr:`address`). ``batch_size > 1`` announces the batched layout in INIT.
    ``timeout`` (s) bounds every wait on the driver; None waits forever."""

    def __init__(
        self,
        *,
        unix: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        host: str | None = None,
        port: int | None = None,
        batch_size: int = 1,
        init_text: str = " ",
        timeout: float | None = None,
    ) -> None:
        if not 1 <= batch_size <= msg.MAX_BATCH_SIZE:
            raise ValueError(f"batch_size={batch_size} must be in [1, {msg.MAX_BATCH_SIZE}]")
        self._requested = resolve_address(unix=unix, prefix=prefix, host=host, port=port)
        self.batch_size = batch_size
        self._init_text = init_text
        self._timeout = timeout
        self._listener: socket.socket | None = None
        self._channel: msg.Channel | None = None
        self.address = self._requested

    def __enter__(self) -> ForceServer:
        self._listener = listen(self._requested)
        if self._requested.port is not None:
            self.address = Address(host=self._requested.host, port=self._listener.getsockname()[1])
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def accept(self, timeout: float) -> None:
        """Waits up to ``timeout`` s for a driver, then does STATUS/INIT/STATUS."""
        if self._listener is None:
            raise RuntimeError("use ForceServer as a context manager before accept()")
        self._listener.settimeout(timeout)
        try:
            sock, _ = self._listener.accept()
        except socket.timeout:
            raise ProtocolError(
                str(self.address), f"a driver to connect within {timeout:g} s", "nothing"
            ) from None
        if self.address.port is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self._timeout)
        self._channel = msg.Channel(sock, f"driver on {self.address}")
        state = self.status()
        if state == "NEEDINIT":
            init = self._init_text
            if self.batch_size > 1:
                init += ("," if init.strip() else "") + f" batch_size:{self.batch_size}"
            self._channel.send(msg.encode_init(0, init))
            state = self.status()
        if state != "READY":
            raise ProtocolError(self._channel.peer, "READY after INIT", repr(state))

    def status(self) -> str:
        """Sends STATUS and returns the driver's answer: NEEDINIT, READY or HAVEDATA."""
        channel = self._connected()
        channel.send(msg.STATUS)
        reply = channel.read_header("the answer to STATUS")
        answers = {msg.NEEDINIT: "NEEDINIT", msg.READY: "READY", msg.HAVEDATA: "HAVEDATA"}
        if reply not in answers:
            raise ProtocolError(
                channel.peer, "NEEDINIT, READY or HAVEDATA",
                "end of stream" if reply is None else msg.header_name(reply),
            )
        return answers[reply]

    def compute(self, structures: Sequence[Structure]) -> list[Prediction]:
        """Sends the structures and returns the driver's predictions (eV, eV/Å,
        stress eV/Å³ or None when not periodic in 3D or the driver had none,
        extras). One structure uses the plain layout unless
        the server is batched; a batched server pads a short batch with copies of
        the last structure, like i-PI, and drops their results."""
        channel = self._connected()
        count = len(structures)
        if not 1 <= count <= self.batch_size:
            raise ValueError(f"{count} structures for a server with batch_size={self.batch_size}")
        nat = structures[0].n_atoms
        if any(s.n_atoms != nat for s in structures):
            raise ValueError("all structures of one batch must have the same atom count")
        batched = self.batch_size > 1
        padded = list(structures) + [structures[-1]] * (self.batch_size - count if batched else 0)
        wire = [structure_to_wire(s) for s in padded]
        channel.send(msg.encode_posdata(wire, batched=batched) + msg.GETFORCE)
        header = channel.read_header("FORCEREADY")
        if header != msg.FORCEREADY:
            raise ProtocolError(
                channel.peer, "FORCEREADY", "end of stream" if header is None else msg.header_name(header)
            )
        results = msg.read_forceready(channel, count=len(padded), nat=nat)
        return [
            prediction_from_wire(r.energy, r.forces, r.virial, s, _parse_extras(r.extras, channel.peer))
            for r, s in zip(results[:count], structures)
        ]

    def close(self) -> None:
        """Sends EXIT to a connected driver, closes, and removes the socket file."""
        if self._channel is not None:
            try:
                self._channel.sock.sendall(msg.EXIT)
            except OSError:
                pass  # the driver is gone already: nothing left to tell it
            self._channel.sock.close()
            self._channel = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            if self.address.path is not None and os.path.exists(self.address.path):
                os.unlink(self.address.path)

    def _connected(self) -> msg.Channel:
        if self._channel is None:
            raise RuntimeError("no driver connected: call accept() first")
        return self._channel


def _parse_extras(raw: bytes, peer: str) -> dict | None:
    # ASE's SocketClient sends one NUL byte for "no extras".
    text = raw.decode("utf-8", errors="replace").strip("\x00 \t\r\n")
    if not text:
        return None
    try:
        extras = json.loads(text)
    except json.JSONDecodeError:
        extras = None
    if not isinstance(extras, dict):
        raise ProtocolError(peer, "extras as a JSON object", repr(text[:200]))
    return extras
