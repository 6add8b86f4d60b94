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

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

__all__ = ["Batch", "ClusterWriter", "StandaloneWriter", "Writer", "make_writer"]


@dataclass
class Batch:
    """One batch of rows, each row one or two commands (HSET and/or HDEL)."""

    commands: int
    payload: bytes = b""
    """All commands, in row order (standalone Redis)."""
    keys: list[str] = field(default_factory=list)
    resps: list[str] = field(default_factory=list)
    """Per-row key and RESP text (Redis Cluster, where rows are grouped by node)."""
    row_commands: Callable[[], list[int]] | None = None
    """Commands per row, loaded only when a reply is an error."""


RowErrors = list[tuple[int, str]]


class Writer:
    """Send a batch, then (after the caller prepares the next one) receive its replies."""

    needs_rows = False
    """True when batches must carry per-row keys and RESP (Redis Cluster)."""
    client: redis.Redis | RedisCluster
    """The client whose connections the writer borrows; also serves single commands."""

    def send(self, batch: Batch) -> None:
        raise NotImplementedError

    def receive(self) -> RowErrors:
        """(row index in the batch, Redis error) for every row whose command failed."""
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


def _row_errors(lines: list[bytes], row_commands: list[int], rows: list[int]) -> RowErrors:
    """Map error replies back to rows (``rows[i]`` sent ``row_commands[i]`` commands)."""
    errors: RowErrors = []
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
        assert batch.row_commands is not None
        row_commands = batch.row_commands()
        return _row_errors(lines, row_commands, list(range(len(row_commands))))

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


class ClusterWriter(Writer):
    """Groups each batch by the node that owns each key's slot; one payload per node."""

    needs_rows = True

    def __init__(self, client: RedisCluster) -> None:
        self.client = client
        self._connections: dict[str, tuple[redis.ConnectionPool, redis.Connection]] = {}
        self._pending: list[tuple[str, list[int], list[int]]] = []

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
        assert batch.row_commands is not None
        row_commands = batch.row_commands()
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
        errors: RowErrors = []
        pending, self._pending = self._pending, []
        try:
            for name, rows, counts in pending:
                lines = _read_replies(self._connections[name][1], sum(counts))
                if lines is not None:
                    errors.extend(_row_errors(lines, counts, rows))
        except BaseException:
            self._drop_all()
            raise
        return sorted(errors)

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
