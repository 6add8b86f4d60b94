"""The Redis that the product reads: profile hashes live at [prefix:]user:<userId>."""

from __future__ import annotations

import dagster as dg
import redis
from redis.cluster import RedisCluster

from personalization_pipeline.settings import RedisSettings
from personalization_pipeline.sync.redis_config import (
    DEFAULT_SOCKET_TIMEOUT,
    RedisDestination,
    connect,
    redact_url,
)

DEFAULT_REDIS_URL = RedisSettings.url


class RedisResource(dg.ConfigurableResource):
    """Where profiles are synced. Settings are named as RudderStack's Redis destination names
    them (address, password, database, cluster_mode, secure, prefix) plus an ACL username.

    ``url`` (redis:// or rediss://, may carry user, password and database) is the usual way;
    the other settings, when set, override what the URL says.
    """

    url: str = DEFAULT_REDIS_URL
    address: str = ""
    """host:port; with cluster_mode a comma-separated list of seed nodes."""
    password: str | None = None
    username: str | None = None
    database: str = ""
    cluster_mode: bool = False
    secure: bool = False
    skip_verify: bool = False
    prefix: str = ""
    """Key prefix as in RudderStack: "app" gives app:user:<userId>."""
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT
    """Seconds a read or write may wait before the run fails (a frozen or unreachable Redis)."""
    ca_certificate: str | None = None
    """PEM text of a CA to trust with rediss:// (RudderStack's caCertificate)."""
    ca_cert_path: str = ""
    """A PEM file of a CA to trust with rediss://."""
    client_cert_path: str = ""
    """PEM client certificate, for a Redis that requires one (tls-auth-clients)."""
    client_key_path: str = ""
    """Its unencrypted PEM private key."""

    def destination(self) -> RedisDestination:
        overrides: dict[str, object] = {
            "cluster_mode": self.cluster_mode,
            "skip_verify": self.skip_verify,
            "prefix": self.prefix,
            "socket_timeout": self.socket_timeout,
        }
        for name in (
            "address",
            "password",
            "username",
            "database",
            "ca_certificate",
            "ca_cert_path",
            "client_cert_path",
            "client_key_path",
        ):
            if getattr(self, name):
                overrides[name] = getattr(self, name)
        if self.secure:
            overrides["secure"] = True
        return RedisDestination.from_url(self.url, **overrides)

    def get_client(self) -> redis.Redis | RedisCluster:
        """A connected client; fails with the address it tried and how to fix it."""
        return connect(self.destination())


def redact(url: str) -> str:
    """The URL without its password, for messages and logs, even when it is malformed."""
    try:
        return RedisDestination.from_url(url).display_url()
    except ValueError:
        return redact_url(url)
