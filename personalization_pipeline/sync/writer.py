"""Pipelined writes of whole batches of hand-built RESP commands.

The engine renders every command of a batch in DuckDB SQL (see ``render.py``) and hands
the writer one ``bytes`` payload. The writer sends it on a redis-py connection (so AUTH,
ACL user, TLS and SELECT are redis-py's) and reads the replies straight from the socket.
Every command we send (HSET, HDEL) answers with a one-line reply (``:n`` or ``-ERR``), so
counting line ends finds the end of a batch, and errors are parsed only when a ``-`` shows.

Measured while choosing this design (200,000 pre-rendered 7-field HSETs, batches of 5,000,
local redis-server, 2-core machine): redis-py pipelines ~145k rows/s; the same batches
hand-built and sent with ``send_packed_command``, replies read with ``read_response``
~390k rows/s, replies read by counting line ends ~455k rows/s. ``benchmarks/sync.py``
compares the whole engine with a redis-py pipeline baseline in one run.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import redis
from redis.cluster import ClusterNode, NodesManager, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ClusterError

__all__ = ["Batch", "ClusterWriter", "StandaloneWriter", "Writer", "make_writer"]


@dataclass
class Batch:
    """One batch of rows, each row one or two commands (HSET and/or HDEL) of its own key."""

    commands: int
    payload: bytes = b""
    """All commands, rows in any order, a row's commands together (standalone Redis)."""
    keys: list[str] = field(default_factory=list)
    resps: list[str] = field(default_factory=list)
    row_commands: list[int] = field(default_factory=list)
    """Per-row key, RESP text and number of commands (Redis Cluster, where rows are grouped
    by node)."""


RowErrors = list[tuple[str, str]]
"""(Redis key of the row, Redis error) for every row one of whose commands failed."""


class Writer:
    """Send a batch, then (after the caller prepares the next one) receive its replies."""

    needs_rows = False
    """True when batches must carry per-row keys and RESP (Redis Cluster)."""
    client: redis.Redis | RedisCluster
    """The client whose connections the writer borrows; also serves single commands."""

    def send(self, batch: Batch) -> None:
        raise NotImplementedError

    def receive(self) -> RowErrors:
        """The rows of the batch sent last whose commands failed."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""


def _read_replies(connection: redis.Connection, expected: int) -> list[bytes] | None:
    """Read ``expected`` one-line replies; None when all of them succeeded."""
    sock = connection._sock
    if sock is None:
        raise redis.ConnectionError("connection closed before the replies arrived")
    chunks = []
    seen = 0
    while seen < expected:
        data = sock.recv(1 << 20)
        if not data:
            raise redis.ConnectionError("Redis closed the connection mid-batch")
        chunks.append(data)
        seen += data.count(b"\n")
    replies = b"".join(chunks)
    if not (replies.startswith(b"-") or b"\n-" in replies):
        return None
    return replies.split(b"\r\n")[:expected]


def _row_errors(
    lines: list[bytes], row_commands: list[int], rows: list[int]
) -> list[tuple[int, str]]:
    """Map error replies back to rows (``rows[i]`` sent ``row_commands[i]`` commands)."""
    errors: list[tuple[int, str]] = []
    reply = 0
    for row, count in zip(rows, row_commands, strict=True):
        failed = [line for line in lines[reply : reply + count] if line.startswith(b"-")]
        if failed:
            errors.append((row, failed[0][1:].decode("utf-8", "replace")))
        reply += count
    return errors


class StandaloneWriter(Writer):
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._pool = client.connection_pool
        self._connection: redis.Connection | None = None
        self._pending: Batch | None = None

    def send(self, batch: Batch) -> None:
        if self._connection is None:
            self._connection = self._pool.get_connection()
        try:
            self._connection.send_packed_command([batch.payload], check_health=False)
        except BaseException:
            self._drop()
            raise
        self._pending = batch

    def receive(self) -> RowErrors:
        batch, self._pending = self._pending, None
        if batch is None or self._connection is None:
            return []
        try:
            lines = _read_replies(self._connection, batch.commands)
        except BaseException:
            self._drop()
            raise
        if lines is None:
            return []
        keys, row_commands = _payload_rows(batch.payload)
        return [
            (keys[row], message)
            for row, message in _row_errors(lines, row_commands, list(range(len(keys))))
        ]

    def _drop(self) -> None:
        # A half-read connection can never be reused: its replies would answer someone else.
        if self._connection is not None:
            self._connection.disconnect()
            self._pool.release(self._connection)
            self._connection = None

    def close(self) -> None:
        if self._pending is not None:
            self._pending = None
            self._drop()
        elif self._connection is not None:
            self._pool.release(self._connection)
            self._connection = None


# Redirections of one batch are followed this many rounds; a cluster that still redirects
# after that is resharding faster than we write (or its nodes disagree) and the run fails.
REDIRECT_ROUNDS = 5
_REDIRECTS = ("MOVED ", "ASK ")
_ASKING = b"*1\r\n$6\r\nASKING\r\n"


def redirect_node(nodes: NodesManager, host: str, port: int) -> ClusterNode:
    """The node a MOVED or ASK reply names, reloading the slot map once when it does not
    know the node yet (one the resharding added)."""
    node = nodes.get_node(host, port)
    if node is None:
        nodes.initialize()
        node = nodes.get_node(host, port)
    if node is None:
        raise ClusterError(f"Redis Cluster redirected to unknown node {host}:{port}")
    return node


def _split_commands(resp: bytes) -> list[bytes]:
    """The RESP arrays (commands) that ``resp`` holds, in order."""
    commands = []
    start = 0
    while start < len(resp):
        line_end = resp.index(b"\r\n", start)
        position = line_end + 2
        for _ in range(int(resp[start + 1 : line_end])):
            length_end = resp.index(b"\r\n", position)
            position = length_end + 2 + int(resp[position + 1 : length_end]) + 2
        commands.append(resp[start:position])
        start = position
    return commands


def _command_key(command: bytes) -> bytes:
    """The first argument (the key) of one RESP command."""
    name_at = command.index(b"\r\n", command.index(b"\r\n") + 2) + 2  # past "*n", "$4"
    length_at = command.index(b"\r\n", name_at) + 2  # past the command's name
    length_end = command.index(b"\r\n", length_at)
    start = length_end + 2
    return command[start : start + int(command[length_at + 1 : length_end])]


def _payload_rows(payload: bytes) -> tuple[list[str], list[int]]:
    """(key of each row, commands of each row) of a standalone payload: a row's commands
    are consecutive and name its key. Parsed only when a reply is an error."""
    keys: list[str] = []
    counts: list[int] = []
    for command in _split_commands(payload):
        key = _command_key(command).decode()
        if keys and keys[-1] == key:
            counts[-1] += 1
        else:
            keys.append(key)
            counts.append(1)
    return keys, counts


class ClusterWriter(Writer):
    """Groups each batch by the node that owns each key's slot; one payload per node.

    During a resharding a node answers ``-MOVED slot host:port`` (the slot has a new owner)
    or ``-ASK slot host:port`` (the slot is migrating and this key is already gone). Those
    rows are resent within the batch: after MOVED to the new owner, with the slot map
    refreshed so the next batches go there directly; after ASK to the named node, each
    command preceded by ASKING (which admits only the next command). Resending a whole row
    is safe: HSET and HDEL of the same fields are idempotent.
    """

    needs_rows = True

    def __init__(self, client: RedisCluster) -> None:
        self.client = client
        self._connections: dict[str, tuple[redis.ConnectionPool, redis.Connection]] = {}
        self._pending: list[tuple[str, list[int], list[int]]] = []
        self._batch: Batch | None = None
        self._row_commands: list[int] = []
        self.redirects: Counter[str] = Counter()
        """Rows resent after a MOVED or an ASK reply, over the writer's life."""

    def _connection(self, node) -> redis.Connection:
        if node.name not in self._connections:
            pool = self.client.get_redis_connection(node).connection_pool
            self._connections[node.name] = (pool, pool.get_connection())
        return self._connections[node.name][1]

    def send(self, batch: Batch) -> None:
        nodes = self.client.nodes_manager
        by_node: dict[str, list[int]] = defaultdict(list)
        node_of = {}
        for row, key in enumerate(batch.keys):
            node = nodes.get_node_from_slot(key_slot(key.encode()))
            by_node[node.name].append(row)
            node_of[node.name] = node
        row_commands = batch.row_commands
        self._batch, self._row_commands = batch, row_commands
        self._pending = []
        try:
            for name, rows in by_node.items():
                payload = "".join(batch.resps[row] for row in rows).encode()
                self._connection(node_of[name]).send_packed_command([payload], check_health=False)
                self._pending.append((name, rows, [row_commands[row] for row in rows]))
        except BaseException:
            self._drop_all()
            raise

    def receive(self) -> RowErrors:
        errors: list[tuple[int, str]] = []
        try:
            redirected = self._collect(errors)
            for _ in range(REDIRECT_ROUNDS):
                if not redirected:
                    break
                self._resend(redirected)
                redirected = self._collect(errors)
        except BaseException:
            self._pending = []
            self._drop_all()
            raise
        errors.extend(
            (
                row,
                f"{message} (still redirected after {REDIRECT_ROUNDS} resends: the cluster is"
                " resharding or its nodes disagree on the slot owner)",
            )
            for row, message in redirected
        )
        assert self._batch is not None
        return [(self._batch.keys[row], message) for row, message in sorted(errors)]

    def _collect(self, errors: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """Read every pending reply; add row errors to ``errors``, return the redirected rows."""
        redirected: list[tuple[int, str]] = []
        pending, self._pending = self._pending, []
        for name, rows, counts in pending:
            lines = _read_replies(self._connections[name][1], sum(counts))
            if lines is not None:
                for row, message in _row_errors(lines, counts, rows):
                    target = redirected if message.startswith(_REDIRECTS) else errors
                    target.append((row, message))
        return redirected

    def _resend(self, redirected: list[tuple[int, str]]) -> None:
        """Send each redirected row to the node its reply names (ASKING first after ASK)."""
        nodes = self.client.nodes_manager
        if any(message.startswith("MOVED ") for _, message in redirected):
            nodes.initialize()
        assert self._batch is not None
        by_node: dict[str, list[tuple[int, bool]]] = defaultdict(list)
        node_of = {}
        for row, message in redirected:
            kind, _, address = message.split(" ", 2)
            self.redirects[kind] += 1
            host, _, port = address.rpartition(":")
            node = redirect_node(nodes, host, int(port))
            by_node[node.name].append((row, kind == "ASK"))
            node_of[node.name] = node
        for name, rows in by_node.items():
            parts, counts = [], []
            for row, asking in rows:
                resp = self._batch.resps[row].encode()
                count = self._row_commands[row]
                if asking:
                    resp = b"".join(_ASKING + command for command in _split_commands(resp))
                    count *= 2
                parts.append(resp)
                counts.append(count)
            connection = self._connection(node_of[name])
            connection.send_packed_command([b"".join(parts)], check_health=False)
            self._pending.append((name, [row for row, _ in rows], counts))

    def _drop_all(self) -> None:
        for pool, connection in self._connections.values():
            connection.disconnect()
            pool.release(connection)
        self._connections.clear()

    def close(self) -> None:
        if self._pending:
            self._pending = []
            self._drop_all()
            return
        for pool, connection in self._connections.values():
            pool.release(connection)
        self._connections.clear()


def make_writer(client: redis.Redis | RedisCluster) -> Writer:
    if isinstance(client, RedisCluster):
        return ClusterWriter(client)
    return StandaloneWriter(client)
