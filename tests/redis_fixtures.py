"""Real Redis deployments beyond one plain redis-server (registered from conftest.py).

- ``redis_cluster``: three masters started with ``--cluster-enabled yes`` and joined with
  ``redis-cli --cluster create``, flushed before each test; helpers migrate a slot between
  them as ``redis-cli --cluster reshard`` does (SETSLOT IMPORTING/MIGRATING, MIGRATE,
  SETSLOT NODE).
- ``tls_files``: a CA, a server certificate for 127.0.0.1 and a client certificate, made
  with the ``cryptography`` package for each session.
- :func:`sync_acl_setuser`: the ``ACL SETUSER`` line the README documents for the sync's
  Redis user, read from the README so the documented line is the tested one.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.conftest import REPO_ROOT, free_port, start_redis_server


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) exists and is free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def cluster_ready(port: int) -> bool:
    info = redis.Redis(port=port).cluster("info")
    return info["cluster_state"] == "ok" and int(info["cluster_slots_ok"]) == 16384


@pytest.fixture(scope="session")
def redis_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    if shutil.which("redis-cli") is None:
        pytest.fail("redis-cli is not installed: apt-get install redis-tools")
    ports = [cluster_port() for _ in range(3)]
    root = tmp_path_factory.mktemp("cluster")
    servers = [
        start_redis_server(
            root / str(port),
            port,
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(root / f"nodes-{port}.conf"),
        )
        for port in ports
    ]
    try:
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *[f"127.0.0.1:{p}" for p in ports],
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_until_cluster_agrees(ports)
        yield ports
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)


def wait_until_cluster_agrees(ports: list[int]) -> None:
    deadline = time.monotonic() + 20
    # Every node must agree, or a command routed to a lagging node gets CLUSTERDOWN.
    while not all(cluster_ready(port) for port in ports):
        assert time.monotonic() < deadline, "cluster did not become ok"
        time.sleep(0.1)


@pytest.fixture
def redis_cluster(redis_cluster_session: list[int]) -> list[int]:
    """Ports of the session's three masters, emptied and with no slot mid-migration."""
    for port in redis_cluster_session:
        with redis.Redis(port=port) as node:
            node.flushall()
    stabilize_all_slots(redis_cluster_session)
    return redis_cluster_session


@dataclass
class Node:
    port: int
    id: str
    client: redis.Redis


def cluster_nodes(ports: list[int]) -> list[Node]:
    nodes = []
    for port in ports:
        client = redis.Redis(port=port, decode_responses=True)
        nodes.append(Node(port, client.execute_command("CLUSTER", "MYID"), client))
    return nodes


def owner(nodes: list[Node], slot: int) -> Node:
    for start, end, (_, port, *_rest), *_replicas in nodes[0].client.execute_command(
        "CLUSTER", "SLOTS"
    ):
        if start <= slot <= end:
            return next(node for node in nodes if node.port == port)
    raise AssertionError(f"no node owns slot {slot}")


def begin_migration(slot: int, source: Node, target: Node) -> int:
    """Mark ``slot`` IMPORTING on ``target`` and MIGRATING on ``source``, then move every key
    the slot holds now: writes to keys not on ``source`` any more are answered with ASK."""
    target.client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.id)
    source.client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.id)
    return move_keys(slot, source, target)


def move_keys(slot: int, source: Node, target: Node) -> int:
    moved = 0
    while keys := source.client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 500):
        source.client.execute_command(
            "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys
        )
        moved += len(keys)
    return moved


def finish_migration(slot: int, source: Node, target: Node, nodes: list[Node]) -> None:
    """Move what is left and give the slot to ``target`` on every node: a client whose slot
    map still names ``source`` is answered with MOVED."""
    move_keys(slot, source, target)
    for node in [target, source, *[n for n in nodes if n not in (source, target)]]:
        node.client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target.id)


def stabilize_all_slots(ports: list[int]) -> None:
    """Clear any IMPORTING / MIGRATING state a test left (its slot map stays as it is)."""
    for port in ports:
        with redis.Redis(port=port, decode_responses=True) as node:
            for line in node.execute_command("CLUSTER", "NODES").splitlines():
                if "myself" in line:
                    for part in line.split()[8:]:
                        if part.startswith("["):
                            slot = part[1:].split("-")[0]
                            node.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
    wait_until_cluster_agrees(ports)


def sync_acl_setuser(password: str, user: str = "profile_sync") -> list[str]:
    """The README's ``ACL SETUSER`` line for ``user``, split into arguments, with ``password``
    in place of its placeholder."""
    readme = (REPO_ROOT / "README.md").read_text()
    lines = [
        line.strip() for line in readme.splitlines() if line.startswith(f"ACL SETUSER {user} ")
    ]
    assert len(lines) == 1, f"the README documents exactly one ACL SETUSER line for {user}"
    return [f">{password}" if part == ">CHANGE-ME" else part for part in lines[0].split()[1:]]


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    """A CA that signed nothing here: trusting only it must fail verification."""


def _write_key(path: Path, key) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _certificate(subject: str, key, issuer_name, issuer_key, *, ca: bool, extensions=()):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    root = tmp_path_factory.mktemp("tls")

    def pem(cert) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("pipeline test CA", ca_key, None, None, ca=True)
    (root / "ca.pem").write_bytes(pem(ca))
    other_key = ec.generate_private_key(ec.SECP256R1())
    (root / "other-ca.pem").write_bytes(
        pem(_certificate("unrelated CA", other_key, None, None, ca=True))
    )
    for name, extension in (
        (
            "server",
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        ),
        ("client", x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH])),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(
            f"pipeline {name}", key, ca.subject, ca_key, ca=False, extensions=[extension]
        )
        (root / f"{name}.pem").write_bytes(pem(cert))
        _write_key(root / f"{name}-key.pem", key)
    return TlsFiles(
        ca=root / "ca.pem",
        server_cert=root / "server.pem",
        server_key=root / "server-key.pem",
        client_cert=root / "client.pem",
        client_key=root / "client-key.pem",
        other_ca=root / "other-ca.pem",
    )
