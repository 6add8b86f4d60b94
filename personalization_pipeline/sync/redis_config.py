"""Redis destination settings, named as RudderStack's Redis destination names them.

RudderStack's settings (reference §1.13): ``address``, ``password``, ``database``,
``clusterMode``, ``secure``, ``skipVerify``, ``caCertificate``, ``prefix``. We add
``username`` for Redis 6 ACL users, which RudderStack lacks. One difference on purpose:
``cluster_mode`` defaults to False here (a single local redis-server is the common case in
this project), while RudderStack defaults ``clusterMode`` to true.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote, unquote

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

__all__ = [
    "DEFAULT_SOCKET_TIMEOUT",
    "RedisDestination",
    "RedisUnavailable",
    "connect",
    "redact_url",
]

RedisClient = redis.Redis | RedisCluster
# Long enough for a large pipelined batch on a busy server, short enough that a frozen Redis
# (SIGSTOP, a network black hole, TLS spoken to a plain port) fails the run instead of holding
# the warehouse forever.
DEFAULT_SOCKET_TIMEOUT = 30.0
TIMEOUT_SETTING = "REDIS_SOCKET_TIMEOUT"


class RedisUnavailable(ConnectionError):
    """Redis cannot be reached or refuses us; the message says what to fix."""


def redact_url(text: str) -> str:
    """``text`` (a URL, well formed or not) with anything that may be a password masked.

    A password can hold any character (``#``, ``/``, ``?``, ``@``), so everything between the
    scheme and the last ``@`` is masked, whatever a URL parser would make of it.
    """
    head, separator, rest = text.rpartition("@")
    if not separator:
        return text
    scheme_end = head.find("//")
    kept = head[: scheme_end + 2] if scheme_end != -1 else ""
    return f"{kept}***@{rest}"


def _url_error(url: str, problem: str) -> ValueError:
    return ValueError(
        f"REDIS_URL {redact_url(url)} {problem}; the form is "
        "redis[s]://[user[:password]@]host[:port][/database], password percent-encoded "
        "or not"
    )


def _whole_number(url: str, text: str, what: str) -> int:
    if not text.isdigit():
        raise _url_error(url, f"has {what} {text!r}, which is not a whole number")
    return int(text)


@dataclass(frozen=True)
class RedisDestination:
    address: str = "127.0.0.1:6379"
    """``host:port``; in cluster mode a comma-separated list of seed nodes."""
    password: str | None = None
    username: str | None = None
    database: int | str = 0
    """An integer (RudderStack stores it as a string); anything else is refused."""
    cluster_mode: bool = False
    secure: bool = False
    skip_verify: bool = False
    ca_certificate: str | None = None
    """PEM text added to the trusted roots (only with ``secure``), as RudderStack takes it."""
    ca_cert_path: str | None = None
    """A PEM file added to the trusted roots (only with ``secure``; REDIS_CA_CERT_PATH)."""
    client_cert_path: str | None = None
    """PEM client certificate, for a server with ``tls-auth-clients`` (REDIS_CLIENT_CERT_PATH)."""
    client_key_path: str | None = None
    """Its unencrypted PEM private key (REDIS_CLIENT_KEY_PATH)."""
    prefix: str = ""
    """Key prefix, applied by the identify encoding's rules (``trim(prefix) + ":"``)."""
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT
    """Seconds any read or write on a connection may wait (REDIS_SOCKET_TIMEOUT)."""

    def __repr__(self) -> str:
        return f"RedisDestination({self.display_url()!r}, prefix={self.prefix!r})"

    @classmethod
    def from_url(cls, url: str, **settings: object) -> RedisDestination:
        """``redis://[user[:password]@]host[:port][/db]`` or ``rediss://`` (TLS).

        Parsed by hand rather than with urllib: the user info ends at the *last* ``@``, so a
        password holding ``#``, ``/``, ``?`` or ``@`` still works, and no error message can
        echo it (they show :func:`redact_url`).
        """
        scheme, separator, rest = url.strip().partition("://")
        if not separator or scheme not in ("redis", "rediss"):
            raise _url_error(url, "must start with redis:// or rediss://")
        userinfo, at, location = rest.rpartition("@")
        username, _, password = userinfo.partition(":")
        hostport, _, path = location.partition("/")
        if "?" in location or "#" in location:
            raise _url_error(url, "has query options or a fragment, which are not read")
        if hostport.startswith("["):
            host, _, port = hostport[1:].partition("]")
            port = port.removeprefix(":")
        else:
            host, _, port = hostport.partition(":")
        database = path.strip("/")
        destination = cls(
            address=f"{host or '127.0.0.1'}:{_whole_number(url, port, 'port') if port else 6379}",
            password=unquote(password) if at and password else None,
            username=unquote(username) if at and username else None,
            database=_whole_number(url, database, "database") if database else 0,
            secure=scheme == "rediss",
        )
        return replace(destination, **settings)

    @property
    def db(self) -> int:
        text = str(self.database).strip()
        if not text.isdigit():
            raise ValueError(
                f"Redis database {text!r} is not a whole number: use 0, 1, 2, ... (the "
                "/database part of REDIS_URL)"
            )
        return int(text)

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """The ``address`` split as RudderStack splits it (comma-separated, trimmed)."""
        nodes = []
        for part in self.address.split(","):
            host, _, port = part.strip().rpartition(":")
            if not host:
                host, port = port, "6379"
            if not port.isdigit():
                raise ValueError(f"Redis address {part.strip()!r} has a port that is not a number")
            nodes.append((host.strip("[]"), int(port)))
        return nodes

    def display_url(self) -> str:
        """The address as a URL without the password, for messages and metadata."""
        scheme = "rediss" if self.secure else "redis"
        user = f"{quote(self.username)}@" if self.username else ""
        suffix = "" if self.cluster_mode else f"/{str(self.database).strip()}"
        return f"{scheme}://{user}{self.address.replace(' ', '')}{suffix}"


TLS_FILE_SETTINGS = {
    "ca_cert_path": "REDIS_CA_CERT_PATH",
    "client_cert_path": "REDIS_CLIENT_CERT_PATH",
    "client_key_path": "REDIS_CLIENT_KEY_PATH",
}


def tls_options(destination: RedisDestination) -> dict[str, object]:
    files = {name: getattr(destination, name) for name in TLS_FILE_SETTINGS}
    if not destination.secure:
        if any(files.values()) or destination.ca_certificate:
            raise ValueError(
                f"Redis at {destination.display_url()} is not TLS but TLS certificates are "
                "set: use rediss:// in REDIS_URL, or unset the REDIS_*_PATH certificate settings"
            )
        return {}
    for name, path in files.items():
        if path and not Path(path).is_file():
            raise ValueError(f"{TLS_FILE_SETTINGS[name]} {path} is not a readable file")
    if files["client_key_path"] and not files["client_cert_path"]:
        raise ValueError("REDIS_CLIENT_KEY_PATH is set without REDIS_CLIENT_CERT_PATH: set both")
    options: dict[str, object] = {"ssl": True}
    if destination.skip_verify:
        options["ssl_cert_reqs"] = "none"
        options["ssl_check_hostname"] = False
    if destination.ca_certificate:
        options["ssl_ca_data"] = destination.ca_certificate
    if files["ca_cert_path"]:
        options["ssl_ca_certs"] = files["ca_cert_path"]
    if files["client_cert_path"]:
        options["ssl_certfile"] = files["client_cert_path"]
        options["ssl_keyfile"] = files["client_key_path"]
    return options


# What a failed TLS handshake looks like (OpenSSL's words, as Python reports them) → the fix.
_TLS_FAILURES = (
    (
        ("CERTIFICATE_VERIFY_FAILED",),
        "presented a certificate this client does not trust",
        "set REDIS_CA_CERT_PATH to the CA certificate that signed it",
    ),
    (
        # TLS 1.3: the server hangs up after the handshake when it wanted a certificate.
        ("CERTIFICATE_REQUIRED", "EOF occurred in violation of protocol"),
        "requires a client certificate",
        "set REDIS_CLIENT_CERT_PATH and REDIS_CLIENT_KEY_PATH to one its CA signed",
    ),
    (
        ("ALERT_UNKNOWN_CA", "ALERT_BAD_CERTIFICATE"),
        "refused the client certificate",
        "set REDIS_CLIENT_CERT_PATH and REDIS_CLIENT_KEY_PATH to one signed by the CA it trusts",
    ),
    (
        ("SSL", "_ssl.c"),
        "failed the TLS handshake",
        "check REDIS_CA_CERT_PATH, REDIS_CLIENT_CERT_PATH / REDIS_CLIENT_KEY_PATH, and that"
        " the port speaks TLS",
    ),
)


def _tls_refused(destination: RedisDestination, error: Exception) -> RedisUnavailable | None:
    """The fix for a failed TLS handshake, or None when ``error`` is not one."""
    text = str(error)
    if destination.secure:
        for markers, problem, fix in _TLS_FAILURES:
            if any(marker in text for marker in markers):
                return RedisUnavailable(
                    f"Redis at {destination.display_url()} {problem} ({text}): {fix}"
                )
    return None


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
        "socket_connect_timeout": min(5.0, destination.socket_timeout),
        "socket_timeout": destination.socket_timeout,
        # A dropped connection is retried twice; a timeout is not, or a frozen server would
        # hold the run for several times the timeout the message names.
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.1), 2, (redis.ConnectionError,)),
        **tls_options(destination),
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
    except redis.TimeoutError as error:
        raise RedisUnavailable(timeout_message(where, destination.socket_timeout)) from error
    except redis.ConnectionError as error:
        if tls_error := _tls_refused(destination, error):
            raise tls_error from error
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


def timeout_message(where: str, seconds: float) -> str:
    return (
        f"Redis at {where} did not answer within {seconds:g}s: it is frozen, overloaded or "
        "unreachable (or speaks TLS where rediss:// is not used, or the reverse). Check it, "
        f"or raise {TIMEOUT_SETTING} if it is merely slow"
    )
