"""Shared test setup: hypothesis profiles (ci: bounded, long: 10k+ examples), and a real
redis-server per test for every directory that needs one."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.cluster.conftest import RedisServer, own_redis

settings.register_profile(
    "ci", max_examples=200, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "long", max_examples=10_000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A real redis-server on a free port (killed by its PID at the end; a test may kill
    and restart it)."""
    with own_redis() as server:
        yield server
