"""The chaos suite runs on the cluster suite's real redis-server fixture."""

from __future__ import annotations

from tests.cluster.conftest import redis

__all__ = ["redis"]
