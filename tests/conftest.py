"""Shared pytest fixtures. Fixtures that start real peers live next to the tests
that use them; helpers meant for users live in :mod:`umadrive.testing`."""

import pytest

from tests.peers import remove_socket, unique_socket


@pytest.fixture
def socket_name():
    """A unix socket name unique to this test process and call (tests run in
    parallel); its file under /tmp/ipi_ is removed afterwards if a killed peer
    left it behind."""
    name = unique_socket("test")
    yield name
    remove_socket(name)
