"""Where the two sides meet: a unix socket path (prefix + name) or a TCP host
and port, and how each side opens its socket."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

from umadrive.protocol.errors import ProtocolError

DEFAULT_PREFIX = "/tmp/ipi_"
SUN_PATH_MAX = 107  # bytes in sockaddr_un.sun_path, without the final NUL
_RETRY_INTERVAL_S = 0.1


@dataclass(frozen=True)
class Address:
    """A unix socket ``path`` or an inet ``host``/``port`` (exactly one kind)."""

    path: str | None = None
    host: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path is not None else f"inet:{self.host}:{self.port}"


def resolve_address(
    *, unix: str | None, prefix: str, host: str | None, port: int | None
) -> Address:
    """Checks that exactly one kind of address is given and that a unix path fits."""
    if unix is not None:
        if host is not None or port is not None:
            raise ValueError(
                f"give either unix={unix!r} or host/port ({host!r}, {port!r}), not both"
            )
        path = prefix + unix
        if len(os.fsencode(path)) > SUN_PATH_MAX:
            raise ValueError(
                f"unix socket path {path!r} is {len(os.fsencode(path))} bytes; the limit is "
                f"{SUN_PATH_MAX}: use a shorter name or prefix"
            )
        return Address(path=path)
    if port is None:
        raise ValueError("no address: give unix=NAME, or port=P (and host=H, default localhost)")
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is outside [0, 65535]")
    return Address(host=host or "localhost", port=port)


def _new_socket(address: Address) -> socket.socket:
    if address.path is not None:
        return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    family = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def connect_with_retry(address: Address, timeout: float) -> socket.socket:
    """Connects to a server that may not be listening yet, retrying every 0.1 s
    for up to ``timeout`` seconds. Returns a blocking socket."""
    deadline = time.monotonic() + timeout
    target = address.path if address.path is not None else (address.host, address.port)
    while True:
        sock = _new_socket(address)
        try:
            sock.connect(target)
        except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError) as error:
            sock.close()
            if time.monotonic() >= deadline:
                raise ProtocolError(
                    str(address),
                    f"a listening server within {timeout:g} s (start i-PI/ASE first, check the "
                    "address, or raise --connect-timeout)",
                    f"{type(error).__name__}: {error}",
                ) from None
            time.sleep(_RETRY_INTERVAL_S)
        else:
            sock.settimeout(None)
            return sock


def listen(address: Address) -> socket.socket:
    """A listening socket bound to ``address`` (port 0 picks a free port)."""
    sock = _new_socket(address)
    try:
        if address.path is not None:
            sock.bind(address.path)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address.host, address.port))
        sock.listen(1)
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {address}: {error}") from error
    return sock
