"""Redis destination settings, named as RudderStack's Redis destination names them.

RudderStack's settings (reference §1.13): ``address``, ``password``, ``database``,
``clusterMode``, ``secure``, ``skipVerify``, ``caCertificate``, ``prefix``. We add
``username`` for Redis 6 ACL users, which RudderStack lacks. One difference on purpose:
``cluster_mode`` defaults to False here (a single local redis-server is the common case in
this project), while RudderStack defaults ``clusterMode`` to true.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import quote, unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster

__all__ = ["RedisDestination", "RedisUnavailable", "connect"]

RedisClient = redis.Redis | RedisCluster


class RedisUnavailable(ConnectionError):
    """Redis cannot be reached or refuses us; the message says what to fix."""


@dataclass(frozen=True)
class RedisDestination:
    address: str = "127.0.0.1:6379"
    """``host:port``; in cluster mode a comma-separated list of seed nodes."""
    password: str | None = None
    username: str | None = None
    database: int | str = 0
    """RudderStack stores it as a string; anything that is not an integer means 0."""
    cluster_mode: bool = False
    secure: bool = False
    skip_verify: bool = False
    ca_certificate: str | None = None
    """PEM text added to the trusted roots (only with ``secure``)."""
    prefix: str = ""
    """Key prefix, applied by the identify encoding's rules (``trim(prefix) + ":"``)."""

    @classmethod
    def from_url(cls, url: str, **settings: object) -> RedisDestination:
        """``redis://[user[:password]@]host:port[/db]`` or ``rediss://`` (TLS)."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"REDIS_URL {url!r} must start with redis:// or rediss://")
        path = parts.path.strip("/")
        destination = cls(
            address=f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}",
            password=unquote(parts.password) if parts.password else None,
            username=unquote(parts.username) if parts.username else None,
            database=path or 0,
            secure=parts.scheme == "rediss",
        )
        return replace(destination, **settings)

    @property
    def db(self) -> int:
        try:
            return int(str(self.database).strip())
        except ValueError:
            return 0

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """The ``address`` split as RudderStack splits it (comma-separated, trimmed)."""
        nodes = []
        for part in self.address.split(","):
            host, _, port = part.strip().rpartition(":")
            if not host:
                host, port = port, "6379"
            nodes.append((host, int(port)))
        return nodes

    def display_url(self) -> str:
        """The address as a URL without the password, for messages and metadata."""
        scheme = "rediss" if self.secure else "redis"
        user = f"{quote(self.username)}@" if self.username else ""
        suffix = "" if self.cluster_mode else f"/{self.db}"
        return f"{scheme}://{user}{self.address.replace(' ', '')}{suffix}"


def _tls_options(destination: RedisDestination) -> dict[str, object]:
    if not destination.secure:
        return {}
    options: dict[str, object] = {"ssl": True}
    if destination.skip_verify:
        options["ssl_cert_reqs"] = "none"
        options["ssl_check_hostname"] = False
    if destination.ca_certificate:
        options["ssl_ca_data"] = destination.ca_certificate
    return options


def _credentials_refused(destination: RedisDestination, error: Exception) -> RedisUnavailable:
    problem = "rejected the credentials" if destination.password else "needs a password"
    return RedisUnavailable(
        f"Redis at {destination.display_url()} {problem} ({error}): put user:password in "
        "REDIS_URL (redis://user:password@host:6379/0, or redis://:password@host:6379/0 "
        "for the default user)"
    )


def connect(destination: RedisDestination | str) -> RedisClient:
    """A connected client (``redis.Redis`` or ``RedisCluster``), checked with PING.

    Raises RedisUnavailable with the fix in its message when Redis is down or refuses us.
    """
    if isinstance(destination, str):
        destination = RedisDestination.from_url(destination)
    common: dict[str, object] = {
        "password": destination.password,
        "username": destination.username,
        "socket_connect_timeout": 5,
        **_tls_options(destination),
    }
    where = destination.display_url()
    try:
        if destination.cluster_mode:
            client: RedisClient = RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in destination.nodes],
                **common,
            )
        else:
            host, port = destination.nodes[0]
            client = redis.Redis(host=host, port=port, db=destination.db, **common)
        client.ping()
    except redis.AuthenticationError as error:
        raise _credentials_refused(destination, error) from error
    except redis.ResponseError as error:
        if "NOAUTH" in str(error) or "WRONGPASS" in str(error):
            raise _credentials_refused(destination, error) from error
        raise
    except (redis.ConnectionError, redis.TimeoutError) as error:
        hint = "start redis-server or set REDIS_URL"
        if destination.cluster_mode:
            hint = "start the cluster, list its nodes in the address, or set cluster_mode false"
        raise RedisUnavailable(f"Redis at {where} refused the connection: {hint}") from error
    except redis.RedisClusterException as error:
        raise RedisUnavailable(
            f"Redis at {where} is not a usable cluster ({error}): "
            "set cluster_mode false for a single redis-server"
        ) from error
    return client
