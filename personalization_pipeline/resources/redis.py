"""The Redis that the product reads: profile hashes live at [prefix:]user:<userId>."""

from __future__ import annotations

import dagster as dg
import redis

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class RedisResource(dg.ConfigurableResource):
    """Where profiles are synced. Password, database and TLS (rediss://) go in the URL."""

    url: str = DEFAULT_REDIS_URL
    key_prefix: str = ""

    def get_client(self) -> redis.Redis:
        """A connected client; fails with the URL it tried and how to fix it."""
        return connect(self.url)


def connect(url: str) -> redis.Redis:
    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.AuthenticationError as error:
        client.close()
        raise RuntimeError(
            f"Redis at {redact(url)} rejected the credentials ({error}): "
            "fix the password in REDIS_URL"
        ) from error
    except redis.ConnectionError as error:
        client.close()
        raise RuntimeError(
            f"Redis at {redact(url)} refused the connection ({error}): "
            "start redis-server or set REDIS_URL"
        ) from error
    return client


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}" if user else f"{scheme}{sep}***@{host}"
