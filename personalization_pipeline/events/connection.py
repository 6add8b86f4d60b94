"""The gateway's asyncio Redis client, built in one place.

Every request waits on Redis before it answers, so a Redis that stops answering must turn
into a 503 within seconds (the SDKs retry), never a request that hangs: both timeouts are
set, and a failed command is retried once, quickly, before the request gives up.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

# The sync client's TLS settings (rediss://, skip_verify, CA data) apply here unchanged.
from personalization_pipeline.sync.redis_config import RedisDestination, tls_options

__all__ = ["DEFAULT_SOCKET_TIMEOUT", "AsyncRedis", "async_client"]

AsyncRedis = aioredis.Redis | RedisCluster

# Seconds. Loopback round trips take well under a millisecond; a busy cross-zone Redis a few.
DEFAULT_SOCKET_TIMEOUT = 2.0


def async_client(
    destination: RedisDestination, socket_timeout: float = DEFAULT_SOCKET_TIMEOUT
) -> AsyncRedis:
    """An unconnected client for ``destination``; connections open on first use."""
    options: dict[str, object] = {
        "password": destination.password,
        "username": destination.username,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
        **tls_options(destination),
    }
    if destination.cluster_mode:
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in destination.nodes],
            **options,
        )
    host, port = destination.nodes[0]
    return aioredis.Redis(host=host, port=port, db=destination.db, **options)
