"""The i-PI wire protocol and nothing else: framing, messages, units, the client
state machine and a server side. Imports numpy and ase only, never torch."""

from umadrive.protocol.client import DriverConnection, InitInfo, Request, connect
from umadrive.protocol.errors import ProtocolError, UnsendableReplyError
from umadrive.protocol.server import ForceServer

__all__ = [
    "DriverConnection", "ForceServer", "InitInfo", "ProtocolError", "Request",
    "UnsendableReplyError", "connect",
]
