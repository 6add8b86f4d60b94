"""Warehouse → Redis sorted sets: one list per key, replaced whole when any of it changed.

A :class:`SortedSetSpec` names a relation, the column that says which list a row belongs to,
the columns that make a row's member (turned into the member string by ``member``, e.g.
``keys.product_member``), the score column, and ``key`` (from ``keys.py``) that names a
list's Redis key. A run:

1. fingerprints every list in DuckDB (``hash()`` of its members' columns and scores);
2. compares them with the snapshot ``sync.snapshot_<name>`` (the hash sync's state table,
   ``fields_mask`` unused): new and changed lists are written, lists that left the relation
   are DELeted, the rest is not touched, so an unchanged model writes nothing to Redis;
3. writes each list as ``MULTI / DEL / ZADD / EXEC``: a reader sees the old list or the new
   one, never a mix, and no stale member survives. One key per transaction, so it runs on
   Redis Cluster too, where the transactions are grouped by the node that owns each key.
   A slot migrating meanwhile is followed: a transaction answered ``MOVED`` or ``ASK`` never
   ran (Redis checks every queued key, and again at EXEC), so it is resent whole to the node
   named, with ``ASKING`` first after ASK (see ``_send_to_cluster``).

Guard: a run that would DEL more than ``max_delete_fraction`` (default 20%) of the synced lists
fails with RemovalRefused before writing anything (the hash mirror's rule), unless ``force``:
a model that came out empty or broken leaves Redis its last good lists. ``dry_run`` computes
the plan and samples each kind of change, writing nothing to Redis or the warehouse.

Lost data: the epoch marker ``keys.sync_epoch_key`` is kept in Redis and in ``sync.epochs``
as the hash sync keeps it; when Redis no longer holds it (restart without persistence,
FLUSHALL, failover to an empty replica) the run rewrites every list and says why.

Crashes: before a batch is sent, the snapshot rows of its lists are deleted (committed), so a
run that dies mid-batch leaves those lists unknown and the next run rewrites them. A list to
delete keeps its snapshot row until Redis acknowledged the DEL, so the next run deletes it
again. Every command is idempotent, so resending is always safe.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import duckdb
import redis
from redis.cluster import RedisCluster
from redis.exceptions import AskError, ClusterError, MovedError

from personalization_pipeline.keys import sync_epoch_key
from personalization_pipeline.sync.engine import (
    RemovalRefused,
    SyncError,
    SyncResult,
    SyncSpec,
    new_epoch,
    refuse_mass_removal,
)
from personalization_pipeline.sync.redis_config import RedisUnavailable
from personalization_pipeline.sync.state import (
    ensure_state,
    log_run,
    read_epoch,
    table_exists,
    write_epoch,
)
from personalization_pipeline.sync.writer import REDIRECT_ROUNDS, redirect_node

__all__ = ["SortedSetSpec", "read_lists", "sync_sorted_sets"]

# Lists sent per round trip: each is four commands and up to a few hundred arguments.
BATCH_LISTS = 500


@dataclass(frozen=True)
class SortedSetSpec:
    """What to sync: a relation whose rows are (list, member columns…, score)."""

    name: str
    source: str
    """A table or view name, or a query (``SELECT …``)."""
    list_column: str
    """Which list a row belongs to; ``key`` turns its text (or None) into the Redis key."""
    member_columns: Sequence[str]
    score_column: str
    key: Callable[[str | None, str], str]
    """``(list value, prefix) -> Redis key``, from keys.py (``similar_key``, ``popular_key``)."""
    member: Callable[..., str]
    """``(*member column values) -> member``, from keys.py (``product_member``)."""

    def __post_init__(self) -> None:
        # The hash sync's rules for names and relations hold here too (it builds the same
        # state table names); borrowing its validation keeps them one rule.
        SyncSpec(self.name, self.source, self.list_column, [self.score_column])

    @property
    def relation(self) -> str:
        return SyncSpec(self.name, self.source, self.list_column, [self.score_column]).relation

    def fingerprint(self, prefix: str) -> int:
        """Changes whenever what a list is written as changes: columns, key or member format."""
        sample = [self.key("x", prefix), self.member(*(["x"] * len(self.member_columns)))]
        text = json.dumps([self.list_column, list(self.member_columns), self.score_column, sample])
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")

    def rows_sql(self, where: str = "") -> str:
        """``list, member columns…, score`` of every row (of the lists ``where`` keeps),
        each list's members best first."""
        columns = ", ".join(self.member_columns)
        return (
            f"SELECT CAST({self.list_column} AS VARCHAR) AS list, {columns}, "
            f"CAST({self.score_column} AS DOUBLE) AS score FROM {self.relation} {where} "
            f"ORDER BY list NULLS FIRST, score DESC, {columns}"
        )


def sync_sorted_sets(
    con: duckdb.DuckDBPyConnection,
    client: redis.Redis | RedisCluster,
    spec: SortedSetSpec,
    *,
    prefix: str = "",
    full: bool = False,
    dry_run: bool = False,
    force: bool = False,
    max_delete_fraction: float = 0.2,
    sample_size: int = 5,
    run_id: str | None = None,
) -> SyncResult:
    """Sync ``spec`` from the warehouse into Redis; see the module doc. ``full`` rewrites
    every list whatever the snapshot says. A run that would delete more than
    ``max_delete_fraction`` of the synced lists raises RemovalRefused before writing anything,
    unless ``force``. ``dry_run`` only plans: counts and ``sample_size`` lists of each kind in
    ``result.samples``, nothing written to Redis or the warehouse (Redis is read for its
    epoch marker). Raises RedisUnavailable when Redis fails; the next run repairs whatever
    this one left half done."""
    started = time.perf_counter()
    mode = "full" if full else "incremental"
    result = SyncResult(spec.name, run_id or uuid.uuid4().hex, mode, dry_run=dry_run)
    snapshot = f"sync.snapshot_{spec.name}"
    if not dry_run:
        ensure_state(con, snapshot)
    spec_hash = spec.fingerprint(prefix)
    epoch_key = sync_epoch_key(spec.name, prefix)
    try:
        current = _current_lists(con, spec, prefix)
        known, snapshotted = _snapshot(con, snapshot, spec_hash)
        epoch, result.full_sync_reason = _check_epoch(
            con, client, spec.name, epoch_key, first_run=not snapshotted
        )
        if full or result.full_sync_reason:
            known = {}
        changed = [key for key, (_, fp) in current.items() if known.get(key) != fp]
        removed = sorted(snapshotted - current.keys())
        result.added = sum(key not in snapshotted for key in changed)
        result.changed = len(changed) - result.added
        result.unchanged = len(current) - len(changed)
        result.removed = len(removed)
        # An empty or broken model would otherwise DEL every list the product reads.
        refuse_mass_removal(
            result, len(snapshotted), "would delete", "lists", max_delete_fraction, force
        )
        if dry_run:
            result.samples = _samples(
                con, spec, current, changed, snapshotted, removed, sample_size
            )
            result.seconds = time.perf_counter() - started
            return result
        if changed or removed or epoch is None:
            rewriting = result.full_sync_reason is not None
            if epoch is None:
                epoch = new_epoch(con, client, spec.name, epoch_key, rewriting)
            _remove(con, client, snapshot, removed)
            _write(con, client, spec, snapshot, spec_hash, current, changed, result)
            if _stored_epoch(client, epoch_key) != epoch:
                raise RedisUnavailable(
                    f"sync {spec.name}: Redis lost its data while this run wrote to it (its "
                    f"marker {epoch_key} is gone); rerun: the next run rewrites every list"
                )
            if rewriting:
                write_epoch(con, spec.name, epoch)
    except (SyncError, RedisUnavailable, redis.RedisError, OSError) as error:
        # log_run records nothing for a dry run.
        status = "refused" if isinstance(error, RemovalRefused) else "failed"
        log_run(con, result, started, status, str(error))
        if isinstance(error, SyncError | RedisUnavailable):
            raise
        raise RedisUnavailable(
            f"sync {spec.name} stopped after {result.rows_written} lists: {error}; rerun: it "
            "rewrites the lists Redis did not acknowledge"
        ) from error
    log_run(con, result, started, "succeeded", None)
    return result


def _snapshot(
    con: duckdb.DuckDBPyConnection, snapshot: str, spec_hash: int
) -> tuple[dict[str, int], set[str]]:
    """(key → fingerprint of the lists written under this spec, every key written). Empty
    when no run created the snapshot yet (a dry run does not create it)."""
    schema, table = snapshot.split(".")
    if not table_exists(con, schema, table):
        return {}, set()
    known = dict(
        con.execute(
            f"SELECT key, fingerprint FROM {snapshot} WHERE spec = ?", [spec_hash]
        ).fetchall()
    )
    return known, {key for (key,) in con.execute(f"SELECT key FROM {snapshot}").fetchall()}


PREVIEW_MEMBERS = 3
"""Best members shown of a list (dry-run samples, the asset's preview)."""


def _samples(
    con: duckdb.DuckDBPyConnection,
    spec: SortedSetSpec,
    current: dict[str, tuple[str | None, int]],
    changed: list[str],
    snapshotted: set[str],
    removed: list[str],
    size: int,
) -> dict[str, list[dict[str, Any]]]:
    """The first ``size`` keys of each kind of change; a list to write with its member count
    and best members, as the run would write them."""
    to_write = sorted(changed)
    kinds = {
        "added": [key for key in to_write if key not in snapshotted][:size],
        "changed": [key for key in to_write if key in snapshotted][:size],
    }
    lists = read_lists(con, spec, [current[key][0] for keys in kinds.values() for key in keys])
    samples: dict[str, list[dict[str, Any]]] = {}
    for kind, keys in kinds.items():
        members = [lists[current[key][0]] for key in keys]
        samples[kind] = [
            {
                "key": key,
                "members": len(held),
                "best": [list(pair) for pair in held[:PREVIEW_MEMBERS]],
            }
            for key, held in zip(keys, members, strict=True)
        ]
    unchanged = sorted(current.keys() - set(changed))[:size]
    samples["unchanged"] = [{"key": key} for key in unchanged]
    samples["removed"] = [{"key": key} for key in removed[:size]]
    return samples


def _current_lists(
    con: duckdb.DuckDBPyConnection, spec: SortedSetSpec, prefix: str
) -> dict[str, tuple[str | None, int]]:
    """Redis key → (list value, fingerprint of its members and scores) for every list."""
    members = ", ".join(spec.member_columns)
    rows = con.execute(
        f"SELECT list, hash(list(({members}, score) ORDER BY {members}, score)) "
        f"FROM ({spec.rows_sql()}) GROUP BY list"
    ).fetchall()
    return {spec.key(value, prefix): (value, fingerprint) for value, fingerprint in rows}


def _check_epoch(
    con: duckdb.DuckDBPyConnection, client: Any, name: str, epoch_key: str, *, first_run: bool
) -> tuple[str | None, str | None]:
    """(the epoch Redis and the warehouse agree on, or None; why every list is rewritten)."""
    recorded = read_epoch(con, name)
    stored = _stored_epoch(client, epoch_key)
    if recorded is not None and stored == recorded:
        return recorded, None
    if recorded is None and first_run:
        return None, None
    if stored is None:
        return None, (
            f"Redis lost its data since the last sync (its marker {epoch_key} is gone: "
            "restarted without persistence, flushed or failed over); rewriting every list"
        )
    return None, (
        f"Redis holds another sync epoch ({epoch_key}): another warehouse, a restore, or a run"
        " rewriting every list that did not finish; rewriting every list"
    )


def _stored_epoch(client: Any, key: str) -> str | None:
    value = client.get(key)
    return value.decode() if isinstance(value, bytes) else value


def _remove(con: duckdb.DuckDBPyConnection, client: Any, snapshot: str, removed: list[str]) -> None:
    """DEL the lists that left the relation; their snapshot rows go once Redis acknowledged."""
    for start in range(0, len(removed), BATCH_LISTS):
        batch = removed[start : start + BATCH_LISTS]
        _send(client, [(key, [("DEL", key)]) for key in batch])
        con.execute(f"DELETE FROM {snapshot} WHERE list_contains(?, key)", [batch])


def _write(
    con: duckdb.DuckDBPyConnection,
    client: Any,
    spec: SortedSetSpec,
    snapshot: str,
    spec_hash: int,
    current: dict[str, tuple[str | None, int]],
    changed: list[str],
    result: SyncResult,
) -> None:
    """Replace each changed list whole, a batch of lists per round trip."""
    for start in range(0, len(changed), BATCH_LISTS):
        batch = changed[start : start + BATCH_LISTS]
        # Intent first: a crash from here on leaves these lists unknown, so they are resent.
        con.execute(f"DELETE FROM {snapshot} WHERE list_contains(?, key)", [batch])
        members = read_lists(con, spec, [current[key][0] for key in batch])
        transactions = []
        for key in batch:
            flat = [part for member, score in members[current[key][0]] for part in (score, member)]
            transactions.append((key, [("DEL", key), ("ZADD", key, *flat)]))
        _send(client, transactions)
        con.executemany(
            f"INSERT INTO {snapshot} VALUES (?, ?, 0, ?)",
            [(key, current[key][1], spec_hash) for key in batch],
        )
        result.rows_written += len(batch)


def read_lists(
    con: duckdb.DuckDBPyConnection, spec: SortedSetSpec, values: list[str | None]
) -> dict[str | None, list[tuple[str, float]]]:
    """What the warehouse says the given lists hold: list value → [(member, score)], best
    first (the sync writes it; the read-back check compares Redis with it)."""
    where = f"WHERE list_contains(?, CAST({spec.list_column} AS VARCHAR))"
    parameters: list[Any] = [[value for value in values if value is not None]]
    if None in values:
        where += f" OR {spec.list_column} IS NULL"
    rows = con.execute(spec.rows_sql(where), parameters).fetchall()
    return {
        value: [(spec.member(*row[1:-1]), row[-1]) for row in group]
        for value, group in groupby(rows, key=lambda row: row[0])
    }


def _send(client: Any, transactions: Iterable[tuple[str, list[tuple]]]) -> None:
    """Each key's commands as one MULTI/EXEC, pipelined on the connection of the node that
    owns the key (one key per transaction: what Redis Cluster allows)."""
    pending = [(key, commands, None) for key, commands in transactions]
    if not isinstance(client, RedisCluster):
        for _key, _commands, redirect in _send_to_node(client, pending):
            raise redirect  # a standalone server never redirects; a cluster node does
        return
    _send_to_cluster(client, pending)


Pending = list[tuple[str, list[tuple], AskError | None]]
"""Transactions to send: (key, commands, the MOVED or ASK reply that sent it elsewhere)."""


def _send_to_cluster(client: RedisCluster, pending: Pending) -> None:
    """Send each transaction to the node owning its key; follow MOVED and ASK replies.

    While a slot migrates, its owner answers ``ASK`` for keys already moved and the importing
    node accepts them only after ``ASKING``; once the slot changed hands the old owner answers
    ``MOVED``. Redis checks the key of every queued command, and again at EXEC, so a
    redirected transaction never ran (EXECABORT, or EXEC itself redirected): it is resent
    whole to the named node, ASKING first after ASK, the slot map reloaded after MOVED.
    """
    nodes = client.nodes_manager
    for resends in range(REDIRECT_ROUNDS + 1):
        by_node: dict[str, Pending] = defaultdict(list)
        node_of = {}
        for key, commands, redirect in pending:
            if redirect is None:
                node = client.get_node_from_key(key)
            else:
                node = redirect_node(nodes, redirect.host, int(redirect.port))
            by_node[node.name].append((key, commands, redirect))
            node_of[node.name] = node
        pending = []
        for name, transactions in by_node.items():
            target = client.get_redis_connection(node_of[name])
            pending += _send_to_node(target, transactions)
        if not pending:
            return
        if resends == REDIRECT_ROUNDS:
            break
        if any(isinstance(redirect, MovedError) for _, _, redirect in pending):
            nodes.initialize()
    raise ClusterError(
        f"{len(pending)} lists still redirected after {REDIRECT_ROUNDS} resends (e.g. "
        f"{pending[0][2]}): the cluster is resharding or its nodes disagree on the slot owner"
    )


def _send_to_node(client: redis.Redis, transactions: Pending) -> Pending:
    """Pipeline raw commands and read raw replies (redis-py's reply parsers expect the replies
    of commands outside a transaction; inside one they are QUEUED). Returns the transactions
    a MOVED or ASK reply redirected; raises any other error."""
    framed = [
        [*_asking(redirect), ("MULTI",), *commands, ("EXEC",)]
        for _key, commands, redirect in transactions
    ]
    flat = [command for group in framed for command in group]
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_packed_command(connection.pack_commands(flat))
        replies = [_reply(connection) for _ in flat]
    except BaseException:
        connection.disconnect()
        raise
    finally:
        pool.release(connection)
    redirected: Pending = []
    position = 0
    for (key, commands, _redirect), group in zip(transactions, framed, strict=True):
        answers = replies[position : position + len(group)]
        position += len(group)
        errors = [answer for answer in answers if isinstance(answer, redis.ResponseError)]
        redirect = next((error for error in errors if isinstance(error, AskError)), None)
        if redirect is not None:
            redirected.append((key, commands, redirect))
        elif errors:
            raise errors[0]
        elif not isinstance(answers[-1], list):
            raise redis.ResponseError(f"the transaction on {key} did not run: {answers[-1]!r}")
        else:
            for item in answers[-1]:
                if isinstance(item, Exception):
                    raise item
    return redirected


def _asking(redirect: AskError | None) -> list[tuple]:
    """ASKING before a transaction an ASK reply sent here: inside MULTI its admission holds
    until EXEC. After MOVED the node owns the slot and needs none."""
    if redirect is None or isinstance(redirect, MovedError):
        return []
    return [("ASKING",)]


def _reply(connection: redis.Connection) -> Any:
    """One reply, an error reply returned as its exception (the next replies still follow)."""
    try:
        return connection.read_response()
    except redis.ResponseError as error:
        return error
