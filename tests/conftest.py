"""Shared pytest fixtures. Fixtures that start real peers live next to the tests
that use them; helpers meant for users live in :mod:`umadrive.testing`."""
