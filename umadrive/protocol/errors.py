"""The exceptions the protocol package raises."""

from __future__ import annotations


class ProtocolError(Exception):
    """The peer broke the i-PI protocol, sent values outside the caps, or went
    away mid-exchange. The message names the peer's address, what was expected
    and what was received."""

    def __init__(self, peer: str, expected: str, received: str) -> None:
        super().__init__(f"{peer}: expected {expected}, received {received}")
        self.peer = peer
        self.expected = expected
        self.received = received


class ReadInterrupted(ProtocolError):
    """A read given up because a stop was asked for and the peer stayed silent
    (see :class:`umadrive.protocol.messages.Channel`)."""


class UnsendableReplyError(ValueError):
    """A reply this side was asked to send is wrong (count, atom count, non-finite
    values, bad extras); nothing was sent."""
