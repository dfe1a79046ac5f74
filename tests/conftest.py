"""Shared pytest fixtures. Fixtures that start real peers live next to the tests
that use them; helpers meant for users live in :mod:`umadrive.testing`."""

import itertools
import os

import pytest

_socket_counter = itertools.count()


@pytest.fixture
def socket_name() -> str:
    """A unix socket name unique to this test process and call (tests run in parallel)."""
    return f"umadrive-test-{os.getpid()}-{next(_socket_counter)}"
