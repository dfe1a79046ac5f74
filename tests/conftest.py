"""Shared pytest fixtures. Fixtures that start real peers live next to the tests
that use them; helpers meant for users live in :mod:`umadrive.testing`."""

import itertools
import os

import pytest

_socket_counter = itertools.count()


@pytest.fixture
def socket_name():
    """A unix socket name unique to this test process and call (tests run in
    parallel); its file under /tmp/ipi_ is removed afterwards if a killed peer
    left it behind."""
    name = f"umadrive-test-{os.getpid()}-{next(_socket_counter)}"
    yield name
    if os.path.exists(f"/tmp/ipi_{name}"):
        os.unlink(f"/tmp/ipi_{name}")
