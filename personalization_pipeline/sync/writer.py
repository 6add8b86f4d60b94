"""Pipelined writes of whole batches of hand-built RESP commands.

The engine renders every command of a batch in DuckDB SQL (see ``render.py``) and hands
the writer ``bytes`` payloads. The writer sends them on redis-py connections (so AUTH, ACL
user, TLS and SELECT are redis-py's) and reads the replies straight from the sockets.
Every command we send (HSET, HDEL) answers with a one-line reply (``:n`` or ``-ERR``), so
counting line ends finds the end of a payload's replies, and errors are parsed only when a
``-`` shows.

Measured while choosing this design (200,000 pre-rendered 7-field HSETs, local redis-server,
2-core machine): redis-py pipelines ~145k rows/s; hand-built batches sent with
``send_packed_command``, replies read with ``read_response`` ~390k rows/s, replies read by
counting line ends ~455k rows/s. Then (1,000,000 rows, same machine, redis-server's own
CPU measured): one connection sending batches of several MB made redis-server spend twice
the system time of redis-benchmark, since it kept reading a socket the client was still
writing (the reader then does the loopback TCP work); chunks of 500 rows, each sent only when
its connection has answered the previous one, spread over four connections, brought its CPU
per row down to redis-benchmark's and the rate from ~350k to ~430-490k rows/s.
``benchmarks/sync.py`` compares the whole engine with redis-benchmark and redis-py in one run.
"""

from __future__ import annotations

import selectors
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import redis
from redis.cluster import ClusterNode, NodesManager, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ClusterError

__all__ = ["Batch", "Chunk", "ClusterWriter", "StandaloneWriter", "Writer", "make_writer"]

# A standalone batch is sent in chunks of this many rows over CONNECTIONS connections, one
# chunk in flight on each: redis-server always has another connection's chunk to read while
# this process turns a connection around, and never reads a socket that is still being
# written (a chunk fits in the socket's buffers).
CHUNK_ROWS = 500
CONNECTIONS = 4
# At most this much is read from a socket at once: a chunk's replies are a few KB. Each
# recv() allocates its whole size first; at 1 MB that was an mmap() and munmap() per call in
# glibc, which doubled this process's system time (0.63 s -> 0.31-0.38 s per 1M rows) and
# took the CPU a local redis-server needed (68-71% -> 73-76% of redis-benchmark, 1M rows).
RECEIVE_BYTES = 1 << 16


@dataclass
class Chunk:
    """Whole rows' commands (a row's HSET and HDEL together, rows in any order)."""

    payload: bytes
    commands: int


@dataclass
class Batch:
    """One batch of rows, each row one or two commands (HSET and/or HDEL) of its own key."""

    commands: int
    chunks: list[Chunk] = field(default_factory=list)
    """Standalone Redis: the rows in chunks of about CHUNK_ROWS."""
    keys: list[str] = field(default_factory=list)
    resps: list[str] = field(default_factory=list)
    row_commands: list[int] = field(default_factory=list)
    """Per-row key, RESP text and number of commands (Redis Cluster, where rows are grouped
    by node)."""


RowErrors = list[tuple[str, str]]
"""(Redis key of the row, Redis error) for every row one of whose commands failed."""


class Writer:
    """Writes batches: all of a batch's commands are answered when :meth:`write` returns."""

    needs_rows = False
    """True when batches must carry per-row keys and RESP (Redis Cluster)."""
    client: redis.Redis | RedisCluster
    """The client whose connections the writer borrows; also serves single commands."""

    def write(self, batch: Batch) -> RowErrors:
        """Send the batch and read every reply; the rows whose commands failed."""
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
        data = sock.recv(RECEIVE_BYTES)
        if not data:
            raise redis.ConnectionError("Redis closed the connection mid-batch")
        chunks.append(data)
        seen += data.count(b"\n")
    return _failed_lines(b"".join(chunks), expected)


def _failed_lines(replies: bytes, expected: int) -> list[bytes] | None:
    """The reply lines when one of them is an error, else None."""
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


class _Line:
    """One connection of a :class:`StandaloneWriter` and the chunk it waits on."""

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self.pool = pool
        self.connection = pool.get_connection()
        self.chunk: Chunk | None = None
        self._replies: list[bytes] = []
        self._seen = 0

    def send(self, chunk: Chunk) -> None:
        self.connection.send_packed_command([chunk.payload], check_health=False)
        self.chunk, self._replies, self._seen = chunk, [], 0

    def receive(self) -> bool:
        """Read what arrived; True once every reply of the chunk is in."""
        sock = self.connection._sock
        if sock is None or self.chunk is None:
            raise redis.ConnectionError("Redis sent data no command asked for")
        data = sock.recv(RECEIVE_BYTES)
        # TLS: the socket may hold decrypted bytes that select() does not announce.
        while data and getattr(sock, "pending", None) and sock.pending():
            data += sock.recv(RECEIVE_BYTES)
        if not data:
            raise redis.ConnectionError("Redis closed the connection mid-batch")
        self._replies.append(data)
        self._seen += data.count(b"\n")
        return self._seen >= self.chunk.commands

    def errors(self) -> RowErrors:
        """The failed rows of the chunk whose replies are all in."""
        assert self.chunk is not None
        chunk, self.chunk = self.chunk, None
        lines = _failed_lines(b"".join(self._replies), chunk.commands)
        if lines is None:
            return []
        keys, row_commands = _payload_rows(chunk.payload)
        return [
            (keys[row], message)
            for row, message in _row_errors(lines, row_commands, list(range(len(keys))))
        ]


class StandaloneWriter(Writer):
    """Sends a batch's chunks over :data:`CONNECTIONS` connections, each connection's next
    chunk as soon as it has answered the previous one. Rows are independent (each key once
    in a run's plan, a row's commands in one chunk), so their order does not matter."""

    def __init__(self, client: redis.Redis, connections: int = CONNECTIONS) -> None:
        self.client = client
        self._count = connections
        self._lines: list[_Line] = []
        self._selector: selectors.BaseSelector | None = None

    def write(self, batch: Batch) -> RowErrors:
        if not self._lines:
            self._open()
        assert self._selector is not None
        todo = iter(batch.chunks)
        errors: RowErrors = []
        waiting = 0
        try:
            for line in self._lines:
                chunk = next(todo, None)
                if chunk is None:
                    break
                self.send_chunk(line, chunk)
                waiting += 1
            timeout = self._lines[0].connection.socket_timeout
            while waiting:
                ready = self._selector.select(timeout)
                if not ready:
                    raise redis.TimeoutError("Timeout reading from socket")
                for key, _ in ready:
                    line = key.data
                    if not line.receive():
                        continue
                    errors.extend(line.errors())
                    chunk = next(todo, None)
                    if chunk is None:
                        waiting -= 1
                    else:
                        self.send_chunk(line, chunk)
        except BaseException:
            self._drop()
            raise
        return errors

    def send_chunk(self, line: _Line, chunk: Chunk) -> None:
        line.send(chunk)

    def _open(self) -> None:
        self._selector = selectors.DefaultSelector()
        try:
            for _ in range(self._count):
                line = _Line(self.client.connection_pool)
                self._lines.append(line)
                self._selector.register(line.connection._sock, selectors.EVENT_READ, line)
        except BaseException:
            self._drop()
            raise

    def _drop(self) -> None:
        # A half-read connection can never be reused: its replies would answer someone else.
        for line in self._lines:
            line.connection.disconnect()
        self._release()

    def _release(self) -> None:
        for line in self._lines:
            line.pool.release(line.connection)
        self._lines = []
        if self._selector is not None:
            self._selector.close()
            self._selector = None

    def close(self) -> None:
        self._release()


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

    def write(self, batch: Batch) -> RowErrors:
        self._send(batch)
        return self._receive()

    def _send(self, batch: Batch) -> None:
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

    def _receive(self) -> RowErrors:
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
