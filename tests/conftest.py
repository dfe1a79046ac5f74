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


@pytest.fixture(autouse=True, scope="session")
def private_model_cache(tmp_path_factory):
    """``$UMADRIVE_CACHE`` (model names, compiled kernels) in a folder of this test
    session, for this process and the drivers it starts: tests neither read a
    user's cached models nor leave kernels in ``~/.cache``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UMADRIVE_CACHE", str(tmp_path_factory.mktemp("umadrive-cache")))
        yield
