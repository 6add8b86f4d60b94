"""Warehouse → Redis sync: diff in DuckDB, write only what changed, resume where it stopped.

A :class:`SyncSpec` names a DuckDB relation (table, view or query), its key column, the
columns to write (column → hash field) and a key template (``user:{key}``). Each row
becomes what RudderStack's Redis destination writes for an identify with those traits:
key ``[prefix:]user:<key>``, one HSET of the non-null fields, values rendered by
:mod:`personalization_pipeline.sync.identify` (the one encoding), in DuckDB SQL by
:mod:`personalization_pipeline.sync.render` (what each column type becomes is there).

State lives in the warehouse schema ``sync`` (:mod:`personalization_pipeline.sync.state`):
a snapshot per sync of what was last written, the rejected rows and a run log. A run
computes added / changed / removed / unchanged against the snapshot in SQL and advances
it after every batch, only for acknowledged rows, so a run that dies midway is resumed by
the next.

Modes:

- ``upsert`` (default): HSET added and changed rows; never deletes a key (RudderStack).
- ``mirror``: upsert, plus rows that left the source are removed from Redis. **Removal
  deletes only the fields this sync owns (HDEL of the mapped fields), never the key**:
  ``user:<id>`` hashes are shared with the real-time ingestion (identify traits, recent
  purchases) and with other syncs, which a DEL would wipe. Redis drops a hash whose last
  field goes, so a key only this sync wrote disappears. A run that would remove more than
  ``max_delete_fraction`` (default 20%) of the snapshot fails before writing anything
  unless ``force=True``.
- ``full``: rewrite every valid row (reconciliation), and HDEL every owned field that is
  null (when ``remove_nulls``), whatever the snapshot says.
- ``dry_run=True`` with any mode: compute the plan and samples of each kind of change;
  nothing is written to Redis or to the warehouse.

Nulls: RudderStack's HMSET never removes a field whose trait became null. With
``remove_nulls=True`` (default) a field this sync wrote before and that is null now is
removed with HDEL, so Redis equals the warehouse. ``remove_nulls=False`` is RudderStack's
behaviour. A changed mapping (spec) counts every row as changed, and its nulls are all
removed (the old field mask means nothing under the new mapping).

Crashes and lost data (see ``state.py``): the rows of a batch are *in doubt* from before it
goes out until its acknowledgement is recorded (a "sent" and an "acknowledged" marker over
the run's plan, not key lists), so whatever kills a run, the next one resends their current
values and removes the fields of those that left the source, in every mode. An epoch marker
kept both in Redis and in the warehouse tells whether Redis still holds what the snapshot
says; when it does not (restart without persistence, FLUSHALL, failover to an empty replica),
that run rewrites every row as in ``full`` mode and says why (``full_sync_reason``).

Batches are rendered to RESP by SQL ``string_agg`` (four per query) on the caller's thread,
which also records the batches acknowledged meanwhile, together in one transaction; a
:class:`~personalization_pipeline.sync.sender.Sender` thread sends them with the writer
(``writer.py``) and reads the replies meanwhile. DuckDB runs the sync under ``memory_limit``
and spills past it, so memory follows the batch size, not the table.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from typing import Any

import duckdb
import redis
from redis.cluster import RedisCluster

from personalization_pipeline.keys import sync_epoch_key
from personalization_pipeline.sync.identify import (
    FORBIDDEN_PROTOTYPE,
    JS_WHITESPACE,
    PROTOTYPE_KEY,
    USER_KEY_TEMPLATE,
    forbidden_trait_name,
    key_prefix,
    template_key,
)
from personalization_pipeline.sync.redis_config import TIMEOUT_SETTING, RedisUnavailable
from personalization_pipeline.sync.render import (
    ident,
    literal,
    register_udfs,
    render_sql,
    resp_sql,
    text_sql,
)
from personalization_pipeline.sync.result import SyncResult
from personalization_pipeline.sync.sender import Sender
from personalization_pipeline.sync.state import (
    begin_sending,
    ensure_state,
    forget_in_doubt,
    in_doubt_keys,
    log_run,
    mark_sent,
    read_epoch,
    record_acknowledged,
    record_invalid,
    scalar,
    table_exists,
    write_epoch,
)
from personalization_pipeline.sync.writer import (
    CHUNK_ROWS,
    Batch,
    Chunk,
    RowErrors,
    Writer,
    make_writer,
)
from personalization_pipeline.warehouse.transaction import transaction

__all__ = [
    "MODES",
    "SyncError",
    "SyncResult",
    "SyncSpec",
    "refuse_mass_removal",
    "render_rows",
    "sync_table",
]

MODES = ("upsert", "mirror", "full")
MAX_FIELDS = 64
BLANK_KEY = "Blank userId passed in identify event"
NOTHING_TO_WRITE = "context or context.traits or traits is empty"
# Redis errors that belong to one row's data: the row is rejected and the run goes on.
ROW_ERRORS = ("WRONGTYPE",)
# Batches rendered by one query: DuckDB spreads it over its threads, and their keys are
# marked in doubt by one statement.
RENDERED_TOGETHER = 4
# DuckDB's memory limit while a sync runs. Its temp tables hold every row of the plan; past
# this DuckDB spills them to disk, so ten million rows need no more memory than one million.
MEMORY_LIMIT = "1GB"
# DuckDB's checkpoint threshold while batches are sent. Each span's commit adds the sent
# keys and the acknowledged rows to the WAL; past the default 16 MiB every few commits would
# checkpoint the snapshot, which took a third of the run's commit time and the CPU a local
# redis-server needed (1M rows, 2 cores: 196k rows/s against 231k-240k with one checkpoint).
# The sync checkpoints itself instead, right after a span is handed to the sender, while
# Redis writes the batches it holds (SENDER_DEPTH): once every CHECKPOINT_ROWS rows sent and
# once every batch is. One checkpoint of ten million rows' state took 3.3 s, and Redis sat
# idle for most of it (10M rows, 2 cores: 44-48 s per full sync with one checkpoint, 41-44 s
# every 1M rows, 40.6-41 s every 500k; at 1M rows no difference). A crash meanwhile leaves
# a longer WAL.
WRITE_CHECKPOINT_THRESHOLD = "1GB"
CHECKPOINT_ROWS = 500_000
# Rendered batches the sender may hold (about 5 MB each at 20,000 rows), so that Redis writes
# on through each checkpoint (0.2-0.6 s here). While the plan was a row per key, the one
# checkpoint of 1M rows took 0.45-0.5 s and six batches ran out before it: Redis sat idle
# (2 cores: tail after the last reply 0.17 s with six, 0.10 s with twelve, 0.02 s once the
# last ones are recorded as they come).
SENDER_DEPTH = 12

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_RELATION = re.compile(r'^[A-Za-z_][\w$]*(\.[A-Za-z_][\w$]*){0,2}$|^"')
_BLANK = "[" + JS_WHITESPACE + "]*"


class SyncError(RuntimeError):
    """The sync refused to run or stopped; the message says why and what to do."""


class RemovalRefused(SyncError):
    """A mirror run would remove more than its max_delete_fraction; nothing was written."""


@dataclass(frozen=True)
class SyncSpec:
    """What to sync: a relation, its key column, mapped columns and the key template."""

    name: str
    source: str
    """A table or view name, or a query (``SELECT …``)."""
    key_column: str
    fields: Mapping[str, str] | Sequence[str]
    """Column → hash field name; a plain list keeps the column names."""
    key_template: str = USER_KEY_TEMPLATE

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"sync name {self.name!r} must match {_NAME.pattern}")
        if not isinstance(self.fields, Mapping):
            object.__setattr__(self, "fields", {column: column for column in self.fields})
        if not 0 < len(self.fields) <= MAX_FIELDS:
            raise ValueError(f"a sync maps 1 to {MAX_FIELDS} columns, got {len(self.fields)}")
        forbidden = [name for name in self.fields.values() if forbidden_trait_name(name)]
        if forbidden:
            raise ValueError(
                f"sync {self.name}: field {forbidden[0]!r}: {FORBIDDEN_PROTOTYPE} (RudderStack "
                "refuses every identify with a __proto__ trait); rename the column"
            )
        if self.key_template.count("{key}") != 1:
            raise ValueError(f"key_template {self.key_template!r} needs exactly one {{key}}")

    def key(self, value: Any, prefix: str = "") -> str:
        """The Redis key of the row whose key column holds ``value`` (IdentifyError if blank);
        the sync's SQL builds the same key (tests hold the two equal)."""
        return template_key(self.key_template, value, prefix)

    @property
    def relation(self) -> str:
        text = self.source.strip()
        if _RELATION.match(text):
            return text
        return f"({text})"

    def fingerprint(self, prefix: str) -> int:
        """Changes whenever what a row is written as changes: mapping, key or prefix."""
        text = json.dumps(
            [self.key_column, list(self.fields.items()), self.key_template, key_prefix(prefix)]
        )
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


@dataclass
class _Plan:
    """The SQL pieces for one spec against one source."""

    spec: SyncSpec
    prefix: str
    columns: list[str]
    key_head: str
    key_tail: str
    key_text: str
    key_sql: str
    column_types: list[str]
    spec_hash: int

    @property
    def field_names(self) -> list[str]:
        return [self.spec.fields[column] for column in self.columns]

    @property
    def values_sql(self) -> list[str]:
        """Rendered mapped columns, read from the source relation."""
        return [
            render_sql(ident(c), t) for c, t in zip(self.columns, self.column_types, strict=True)
        ]

    def rendered_from_raw(self, relation: str, keep: str = "*") -> str:
        """``keep`` and rendered values ``v0, v1, …`` of ``relation``, whose raw copies of
        the mapped columns are ``c0, c1, …``."""
        texts, values = [], []
        for i, duck_type in enumerate(self.column_types):
            text = text_sql(f"c{i}", duck_type)
            if text is not None:
                texts.append(f", {text} AS t{i}")
            values.append(f"{render_sql(f'c{i}', duck_type, text and f't{i}')} AS v{i}")
        return f"SELECT {keep}, {', '.join(values)} FROM (SELECT *{''.join(texts)} FROM {relation})"

    @property
    def all_bits(self) -> int:
        return (1 << len(self.columns)) - 1


def _build_plan(con: duckdb.DuckDBPyConnection, spec: SyncSpec, prefix: str) -> _Plan:
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {spec.relation}").fetchall()
    except duckdb.Error as error:
        raise SyncError(f"sync {spec.name}: cannot read {spec.source!r}: {error}") from error
    types = {row[0]: row[1] for row in described}
    missing = [c for c in [spec.key_column, *spec.fields] if c not in types]
    if missing:
        raise SyncError(
            f"sync {spec.name}: {spec.source!r} has no column(s) {missing}; it has {list(types)}"
        )
    register_udfs(con)
    columns = list(spec.fields)
    key_text = render_sql(ident(spec.key_column), types[spec.key_column])
    before, after = spec.key_template.split("{key}")
    key_sql = (
        # JS trim() semantics; a regular expression is ~30x faster than trim(x, characters).
        f"CASE WHEN {key_text} IS NULL OR regexp_full_match({key_text}, {literal(_BLANK)})"
        " THEN NULL"
        f" ELSE concat({literal(key_prefix(prefix) + before)}, {key_text}, {literal(after)}) END"
    )
    column_types = [types[c] for c in columns]
    head = key_prefix(prefix) + before
    return _Plan(
        spec,
        prefix,
        columns,
        head,
        after,
        key_text,
        key_sql,
        column_types,
        spec.fingerprint(prefix),
    )


def render_rows(
    con: duckdb.DuckDBPyConnection, spec: SyncSpec, prefix: str = ""
) -> list[tuple[str | None, dict[str, str]]]:
    """Every source row as (Redis key or None when blank, fields) rendered by the SQL path.

    Used by tests to prove the SQL rendering equals the identify module's; not a hot path.
    """
    plan = _build_plan(con, spec, prefix)
    selected = ", ".join([plan.key_sql, *plan.values_sql])
    rows = con.execute(f"SELECT {selected} FROM {spec.relation}").fetchall()
    names = plan.field_names
    return [
        (row[0], {n: v for n, v in zip(names, row[1:], strict=True) if v is not None})
        for row in rows
    ]


RERUN = "rerun: it resends what Redis did not acknowledge, or every row if Redis lost its data"


def sync_table(
    con: duckdb.DuckDBPyConnection,
    target: redis.Redis | RedisCluster | Writer | None,
    spec: SyncSpec,
    *,
    prefix: str = "",
    mode: str = "upsert",
    dry_run: bool = False,
    force: bool = False,
    remove_nulls: bool = True,
    max_delete_fraction: float = 0.2,
    batch_size: int = 20_000,
    sample_size: int = 5,
    run_id: str | None = None,
    memory_limit: str | None = MEMORY_LIMIT,
) -> SyncResult:
    """Sync ``spec`` from the warehouse ``con`` into Redis ``target``; see the module doc.

    ``target`` is a client from :func:`redis_config.connect`, or a :class:`Writer` (closed
    when the run ends); it may be None for a dry run (which then cannot tell whether Redis
    lost its data). Raises SyncError (mirror guard, refused writes) or RedisUnavailable;
    either way the next run repairs whatever this one left half done. ``memory_limit`` is
    DuckDB's for the run (None keeps the connection's): past it DuckDB spills to disk.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if target is None and not dry_run:
        raise SyncError(f"sync {spec.name}: a Redis client is needed unless dry_run")
    with _duckdb_setting(con, "memory_limit", memory_limit):
        started = time.perf_counter()
        result = SyncResult(spec.name, run_id or uuid.uuid4().hex, mode, dry_run)
        plan = _build_plan(con, spec, prefix)
        snapshot = f"sync.snapshot_{spec.name}"
        if dry_run:
            if not table_exists(con, "sync", f"snapshot_{spec.name}"):
                snapshot = "(SELECT NULL::VARCHAR AS key, 0::UBIGINT AS fingerprint,"
                snapshot += " 0::UBIGINT AS fields_mask, 0::UBIGINT AS spec WHERE false)"
            has_rejected = table_exists(con, "sync", "rejected_rows")
        else:
            ensure_state(con, snapshot)
            has_rejected = True
        writer = None
        if target is not None:
            writer = target if isinstance(target, Writer) else make_writer(target)
        epoch_key = sync_epoch_key(spec.name, prefix)
        try:
            epoch = None
            if writer is not None:
                epoch, result.full_sync_reason = _check_epoch(
                    con, writer, spec, snapshot, epoch_key
                )
            current = _diff(con, plan, snapshot, result, mode, remove_nulls, has_rejected)
            if mode == "mirror":
                _guard_removals(con, snapshot, result, max_delete_fraction, force)

            if dry_run:
                result.samples = _samples(con, plan, sample_size)
                result.seconds = time.perf_counter() - started
                return result

            record_invalid(
                con,
                spec.name,
                result.run_id,
                f"(SELECT k AS redis_key, fp AS fingerprint FROM {current})",
                "(SELECT key_value, k AS redis_key, fp AS fingerprint, reason FROM _sync_invalid)",
            )
            rewriting = result.full_sync_reason is not None
            if epoch is None:
                epoch = new_epoch(con, writer.client, spec.name, epoch_key, rewriting)
            _write(con, plan, snapshot, writer, result, batch_size)
            if _stored_epoch(writer, epoch_key) != epoch:
                raise RedisUnavailable(
                    f"sync {spec.name}: Redis lost its data while this run wrote to it (its sync"
                    f" marker {epoch_key} is gone); {RERUN}"
                )
            if rewriting:
                write_epoch(con, spec.name, epoch)
            forget_in_doubt(con, spec.name)
        except (SyncError, RedisUnavailable, redis.RedisError, OSError) as error:
            status = "refused" if isinstance(error, RemovalRefused) else "failed"
            log_run(con, result, started, status, str(error))
            if isinstance(error, SyncError | RedisUnavailable):
                raise
            raise RedisUnavailable(_redis_failure(spec, result, error)) from error
        finally:
            if writer is not None:
                writer.close()
        result.rejected = scalar(
            con, "SELECT count(*) FROM sync.rejected_rows WHERE sync_name = ?", [spec.name]
        )
        log_run(con, result, started, "succeeded", None)
        return result


@contextmanager
def _duckdb_setting(con: duckdb.DuckDBPyConnection, name: str, value: str | None) -> Iterator[None]:
    """DuckDB's global setting ``name`` set to ``value`` (None: left alone) for the block,
    then given back: reset when it was the default, else restored."""
    if value is None:
        yield
        return
    now = f"SELECT current_setting({literal(name)})"
    before = scalar(con, now)
    con.execute(f"RESET {name}")
    default = scalar(con, now) == before
    con.execute(f"SET {name} = {literal(value)}")
    try:
        yield
    finally:
        if default:
            con.execute(f"RESET {name}")
        else:
            # DuckDB reports a size rounded down to a tenth (2.7 GiB for 3 GB); half a tenth
            # more keeps that report, where the report itself would shrink run after run.
            number, unit = before.split()
            con.execute(f"SET {name} = '{float(number) + 0.05} {unit}'")


def _guard_removals(
    con: duckdb.DuckDBPyConnection,
    snapshot: str,
    result: SyncResult,
    max_delete_fraction: float,
    force: bool,
) -> None:
    """Refuse a mirror run that would remove too large a share of the synced keys."""
    snapshot_rows = scalar(con, f"SELECT count(*) FROM {snapshot}")
    refuse_mass_removal(
        result, snapshot_rows, "mirror would remove", "keys' fields", max_delete_fraction, force
    )


def refuse_mass_removal(
    result: SyncResult,
    synced: int,
    verb: str,
    noun: str,
    max_delete_fraction: float,
    force: bool,
) -> None:
    """Raise RemovalRefused when ``result.removed`` is more than ``max_delete_fraction`` of
    the ``synced`` keys (or lists) and neither ``force`` nor a dry run (which only warns):
    a broken or empty source must not empty Redis. Call it before writing anything."""
    fraction = result.removed / max(synced, 1)
    if not result.removed or fraction <= max_delete_fraction:
        return
    message = (
        f"sync {result.sync}: {verb} {result.removed} of {synced} {noun}"
        f" ({fraction:.1%} > max_delete_fraction {max_delete_fraction:.0%});"
        " nothing was written. Check the source, or rerun with force=True"
        " (run config: force: true)"
    )
    if not result.dry_run and not force:
        raise RemovalRefused(message)
    result.warnings.append(message)


def _redis_failure(spec: SyncSpec, result: SyncResult, error: Exception) -> str:
    if isinstance(error, TimeoutError | redis.TimeoutError):
        problem = (
            "did not answer within the socket timeout: it is frozen, overloaded or"
            f" unreachable (raise {TIMEOUT_SETTING} if it is merely slow)"
        )
    else:
        problem = f"failed ({error})"
    return f"sync {spec.name}: Redis {problem} after {result.rows_written} rows; {RERUN}"


def _stored_epoch(writer: Writer, key: str) -> str | None:
    value = writer.client.get(key)
    return value.decode() if isinstance(value, bytes) else value


def _check_epoch(
    con: duckdb.DuckDBPyConnection, writer: Writer, spec: SyncSpec, snapshot: str, key: str
) -> tuple[str | None, str | None]:
    """(the epoch Redis and the warehouse agree on or None, why every row must be rewritten).

    No epoch in either and an empty snapshot is a first run: nothing to rewrite."""
    recorded = read_epoch(con, spec.name)
    stored = _stored_epoch(writer, key)
    if recorded is not None and stored == recorded:
        return recorded, None
    if recorded is None and not scalar(con, f"SELECT count(*) FROM {snapshot}"):
        return None, None
    if recorded is None:
        reason = (
            "the warehouse has no sync epoch yet (a snapshot from an older version, or a run"
            " rewriting every row that did not finish)"
        )
    elif stored is None:
        reason = (
            f"Redis lost its data since the last sync (its marker {key} is gone: restarted"
            " without persistence, flushed or failed over)"
        )
    else:
        reason = (
            f"Redis holds another sync epoch ({key}): another warehouse, a restore, or a run"
            " rewriting every row that did not finish"
        )
    return None, reason + "; rewriting every row"


def new_epoch(
    con: duckdb.DuckDBPyConnection, client: Any, name: str, key: str, rewriting: bool
) -> str:
    """A new epoch, set in Redis. A first run records it in the warehouse first: a crash
    between the two leaves them different, which the next run reads as "rewrite everything"
    (safe). A run ``rewriting`` every row, because the snapshot describes a Redis that is gone,
    leaves the warehouse's epoch as it is until every row is written (then
    :func:`write_epoch`): a run that dies midway, with the snapshot describing this Redis
    only in part, leaves the next one rewriting every row again, not trusting the rest."""
    epoch = uuid.uuid4().hex
    if not rewriting:
        write_epoch(con, name, epoch)
    client.set(key, epoch)
    return epoch


def _diff(
    con: duckdb.DuckDBPyConnection,
    plan: _Plan,
    snapshot: str,
    result: SyncResult,
    mode: str,
    remove_nulls: bool,
    has_rejected: bool,
) -> str:
    """Temp tables ``_sync_invalid`` (rows that cannot be written, with the reason) and
    ``_sync_rows`` (rows to send: added, changed, removed, every valid row when rewriting
    all, with raw copies of their values; see :func:`_rows` for how they are numbered).
    Returns the relation of every source row's key, fingerprint and field mask (``k``,
    ``fp``, ``nn``): ``_sync_cur``, or ``_sync_rows`` itself on a first sync with no invalid
    rows."""
    spec = plan.spec
    con.execute(f"CREATE OR REPLACE TEMP TABLE _sync_doubt AS {in_doubt_keys(con, spec.name)}")
    rewrite_all = mode == "full" or result.full_sync_reason is not None
    all_bits = plan.all_bits
    refused = "false"
    if has_rejected and scalar(
        con,
        "SELECT count(*) FROM sync.rejected_rows WHERE sync_name = ? AND kind = 'write'",
        [spec.name],
    ):
        # Rows Redis refused wait until they change (a different fingerprint) to be retried.
        refused = (
            "EXISTS (SELECT 1 FROM sync.rejected_rows r WHERE r.sync_name = "
            f"{literal(spec.name)} AND r.kind = 'write' AND r.redis_key = c.k"
            " AND r.fingerprint = c.fp)"
        )
    carry = not scalar(con, f"SELECT count(*) FROM {snapshot}")
    # A first sync: nothing to join, nothing to remove, every valid row is added.
    first_sync = (
        carry and refused == "false" and not scalar(con, "SELECT count(*) FROM _sync_doubt")
    )
    columns = [ident(c) for c in plan.columns]
    raw = ", ".join(f"{c} AS c{i}" for i, c in enumerate(columns))
    names = ", ".join(f"c{i}" for i in range(len(columns)))
    mask = " | ".join(f"(CAST({c} IS NOT NULL AS UBIGINT) << {i})" for i, c in enumerate(columns))
    row_to_send = ""
    if first_sync:
        # Each row already as a row to send, so that the rows of a table with no invalid
        # row are the rows to send, made in one pass over the source: no second pass, no
        # copy (together 40% of a first sync's plan at 1M rows).
        first_del = f"({all_bits}::UBIGINT & ~nn)" if rewrite_all and remove_nulls else "0"
        row_to_send = (
            f", {names}, 'added' AS op, false AS in_snapshot, CAST({first_del} AS UBIGINT) AS del"
        )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _sync_cur AS
        SELECT k, fp, nn, CASE WHEN k IS NULL THEN CAST(key_text AS VARCHAR) END AS blank_key,
            proto{row_to_send}
        FROM (
            SELECT {plan.key_sql} AS k, {plan.key_text} AS key_text,
                hash({", ".join(columns)}) AS fp, {mask} AS nn, {_proto_sql(plan)} AS proto
                {", " + raw if first_sync else ""}
            FROM {spec.relation}
        )
        """
    )
    # A GROUP BY finds duplicates far cheaper than a window over every row.
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _sync_dups AS SELECT k, count(*) AS n FROM _sync_cur"
        " WHERE k IS NOT NULL GROUP BY k HAVING count(*) > 1"
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _sync_invalid AS
        SELECT coalesce(blank_key, c.k[{len(plan.key_head) + 1}:{-len(plan.key_tail) - 1}])
                AS key_value, c.k, fp,
            CASE WHEN c.k IS NULL THEN {literal(BLANK_KEY)}
                 WHEN d.n IS NOT NULL THEN 'Duplicate key: ' || d.n || ' rows share it'
                 WHEN c.proto THEN {literal(FORBIDDEN_PROTOTYPE)}
                 ELSE {literal(NOTHING_TO_WRITE)} END AS reason
        FROM _sync_cur c
        LEFT JOIN _sync_dups d ON d.k = c.k
        WHERE c.k IS NULL OR c.nn = 0 OR d.n IS NOT NULL OR c.proto
        """
    )
    valid = (
        "c.k IS NOT NULL AND c.nn <> 0 AND NOT c.proto AND c.k NOT IN (SELECT k FROM _sync_dups)"
    )
    invalid = scalar(con, "SELECT count(*) FROM _sync_invalid")
    current = "_sync_cur"
    if first_sync and not invalid:
        con.execute("DROP TABLE IF EXISTS temp._sync_rows")
        con.execute("ALTER TABLE temp._sync_cur RENAME TO _sync_rows")
        current = "_sync_rows"
    elif first_sync:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _sync_rows AS SELECT * FROM _sync_cur c WHERE {valid}"
        )
    else:
        _join_snapshot(con, plan, snapshot, mode, remove_nulls, rewrite_all, refused, carry)
    total = scalar(con, f"SELECT count(*) FROM {current}")
    if current == "_sync_rows":  # a first sync without invalid rows: every row is added
        counts = {"added": total}
    else:
        counts = dict(con.execute("SELECT op, count(*) FROM _sync_rows GROUP BY op").fetchall())
    skipped = 0
    if refused != "false":
        skipped = scalar(con, f"SELECT count(*) FROM _sync_cur c WHERE {valid} AND {refused}")
    result.added = counts.get("added", 0)
    result.changed = counts.get("changed", 0)
    result.removed = counts.get("removed", 0)
    result.unchanged = counts.get(
        "unchanged", total - invalid - skipped - result.added - result.changed
    )
    result.rejected = invalid + skipped
    return current


def _join_snapshot(
    con: duckdb.DuckDBPyConnection,
    plan: _Plan,
    snapshot: str,
    mode: str,
    remove_nulls: bool,
    rewrite_all: bool,
    refused: str,
    carry: bool,
) -> None:
    """``_sync_rows`` from ``_sync_cur``, the snapshot and the in-doubt keys."""
    spec = plan.spec
    all_bits = plan.all_bits
    # Fields this sync may have written and that are null now. Unknown (rewrite, in doubt,
    # changed mapping): every mapped field; otherwise the snapshot's mask says.
    if not remove_nulls:
        delete_mask = "0::UBIGINT"
    else:
        delete_mask = (
            f"CASE WHEN {'true' if rewrite_all else 'false'} OR doubt"
            f" OR spec <> {plan.spec_hash} THEN ({all_bits}::UBIGINT & ~cur_nn)"
            " WHEN NOT in_snapshot THEN 0::UBIGINT ELSE (fields_mask & ~cur_nn) END"
        )
    # Mirror removes what left the source; every mode removes in-doubt keys whose rows are
    # not valid now, since a crashed run may have written them without recording it.
    removed = "doubt"
    if mode == "mirror":
        removed += " OR (in_snapshot AND NOT present)"
    # The source's rows (each key once; a duplicated key as one invalid row), the snapshot
    # and the in-doubt keys, joined FULL OUTER on the key in one pass: at ten million rows
    # each further join of the source with the snapshot spills to disk. The rows to send
    # get raw copies of their values (rendering happens per batch, while Redis works),
    # numbered in the order they are stored, so a batch is a few contiguous row groups.
    # Against an empty snapshot the join carries the values from the source; otherwise it
    # joins the narrow ``_sync_cur`` and the values are fetched for the rows to send only,
    # so an unchanged table is never copied.
    columns = [ident(c) for c in plan.columns]
    mask = " | ".join(f"(CAST({c} IS NOT NULL AS UBIGINT) << {i})" for i, c in enumerate(columns))
    raw = ", ".join(f"{c} AS c{i}" for i, c in enumerate(columns))
    names = ", ".join(f"c{i}" for i in range(len(columns)))
    nulls = ", ".join(f"NULL AS c{i}" for i in range(len(columns)))
    if carry:
        source = (
            f"SELECT {plan.key_sql} AS k, hash({', '.join(columns)}) AS fp, {mask} AS nn,"
            f" {_proto_sql(plan)} AS proto, {raw} FROM {spec.relation}"
        )
        # Raw values of a row that is not written stay NULL: its HSET renders as nothing.
        carried = ", " + ", ".join(
            f"CASE WHEN NOT c.dup AND c.nn <> 0 AND NOT c.proto THEN c.c{i} END AS c{i}"
            for i in range(len(columns))
        )
        dup_values = f", {nulls}"
    else:
        source, carried, dup_values = "SELECT k, fp, nn, proto FROM _sync_cur", "", ""
    keyed_source = f"SELECT *, false AS dup FROM ({source}) WHERE k IS NOT NULL"
    # Duplicated keys, each as one invalid row, only where there are any: an anti-join with
    # an empty list took a quarter of the join at ten million rows (1.46-1.59 s against
    # 1.11-1.15 s, memory limit 1 GB).
    if scalar(con, "SELECT count(*) FROM _sync_dups"):
        keyed_source += (
            " AND k NOT IN (SELECT k FROM _sync_dups)"
            f" UNION ALL SELECT k, NULL, NULL, NULL{dup_values}, true FROM _sync_dups"
        )
    sides = f"""
        SELECT coalesce(c.k, s.key, d.key) AS k, c.fp AS cur_fp, c.nn AS cur_nn,
            coalesce(NOT c.dup AND c.nn <> 0 AND NOT c.proto, false) AS valid,
            coalesce(NOT c.dup AND {refused}, false) AS refused,
            c.k IS NOT NULL AS present, s.key IS NOT NULL AS in_snapshot,
            d.key IS NOT NULL AS doubt, s.fingerprint, s.fields_mask, s.spec{carried}
        FROM (
            {keyed_source}
        ) c
        FULL OUTER JOIN {snapshot} s ON s.key = c.k
        FULL OUTER JOIN _sync_doubt d ON d.key = coalesce(c.k, s.key)
    """
    plan_sql = f"""
        SELECT * FROM (
            SELECT k{", " + names if carry else ""},
                CASE WHEN valid THEN cur_fp ELSE 0::UBIGINT END AS fp,
                CASE WHEN valid THEN cur_nn ELSE 0::UBIGINT END AS nn,
                CASE WHEN NOT valid THEN 'removed'
                     WHEN NOT in_snapshot THEN 'added'
                     WHEN doubt OR fingerprint <> cur_fp OR spec <> {plan.spec_hash}
                          THEN 'changed'
                     ELSE 'unchanged' END AS op,
                in_snapshot,
                CASE WHEN valid THEN {delete_mask} ELSE {all_bits}::UBIGINT END AS del
            FROM ({sides})
            WHERE CASE WHEN valid THEN NOT refused ELSE {removed} END
        ) WHERE {"true" if rewrite_all else "op <> 'unchanged'"}
    """
    if not carry:
        con.execute(f"CREATE OR REPLACE TEMP TABLE _sync_plan AS {plan_sql}")
        # Removed rows have no values (and their key may be duplicated in the source). An
        # inner join, so DuckDB builds its hash table on the plan (small), not the source.
        plan_sql = f"""
            SELECT p.*, v.* EXCLUDE (k) FROM _sync_plan p
            JOIN (SELECT {plan.key_sql} AS k, {raw} FROM {spec.relation}) v ON v.k = p.k
            WHERE p.op <> 'removed'
            UNION ALL
            SELECT *, {nulls} FROM _sync_plan WHERE op = 'removed'
        """
    # Numbered by its rowid (0 to n - 1 in the order stored, as it is made in one statement):
    # no window to number it, and a batch's rows are one rowid range DuckDB seeks to.
    con.execute(f"CREATE OR REPLACE TEMP TABLE _sync_rows AS {plan_sql}")


def _proto_sql(plan: _Plan) -> str:
    """SQL: does a LIST value hold an object with a ``__proto__`` key (the identify module's
    rule)? Only lists can hold objects; in compact JSON a key follows ``{`` or ``,`` and
    nothing inside a string does, since its quotes are escaped."""
    pattern = literal(f'[{{,]"{PROTOTYPE_KEY}":')
    tests = [
        f"coalesce(regexp_matches(CAST(to_json({ident(c)}) AS VARCHAR), {pattern}), false)"
        for c, kind in zip(plan.columns, plan.column_types, strict=True)
        if kind.endswith("]")
    ]
    return " OR ".join(tests) or "false"


def _samples(con: duckdb.DuckDBPyConnection, plan: _Plan, size: int) -> dict[str, list[dict]]:
    samples: dict[str, list[dict]] = {}
    names = plan.field_names
    for op in ("added", "changed", "removed"):
        picked = f"(SELECT * FROM _sync_rows WHERE op = '{op}' ORDER BY k LIMIT {size})"
        rows = con.execute(
            f"SELECT k, del, {', '.join(f'v{i}' for i in range(len(names)))}"
            f" FROM ({plan.rendered_from_raw(picked)}) ORDER BY k"
        ).fetchall()
        samples[op] = [
            {
                "key": row[0],
                "fields": {n: v for n, v in zip(names, row[2:], strict=True) if v is not None},
                "removed_fields": [n for i, n in enumerate(names) if (row[1] >> i) & 1],
            }
            for row in rows
        ]
    samples["rejected"] = [
        {"key_value": key_value, "reason": reason}
        for key_value, reason in con.execute(
            "SELECT key_value, reason FROM _sync_invalid"
            f" ORDER BY key_value NULLS FIRST LIMIT {size}"
        ).fetchall()
    ]
    return samples


def _write(
    con: duckdb.DuckDBPyConnection,
    plan: _Plan,
    snapshot: str,
    writer: Writer,
    result: SyncResult,
    batch_size: int,
) -> None:
    """Render batches and record their acknowledgements on this thread while a
    :class:`Sender` thread sends them."""
    total = scalar(con, "SELECT count(*) FROM _sync_rows")
    if not total:
        return
    batches = _Batches(batch_size, total)
    render = _cluster_batches if writer.needs_rows else _standalone_batches
    name = plan.spec.name
    begin_sending(con, name, result.run_id, batch_size)
    sender = Sender(writer, SENDER_DEPTH)
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    # One DuckDB thread renders some 1.5M rows/s, several times what a Redis server takes;
    # more threads only take CPU from the sender thread and from a redis-server on this
    # machine (measured: two threads spent 1.6-2x the CPU of one on the same batches).
    con.execute("SET threads = 1")

    def record(
        acknowledgements: Iterator[tuple[int, RowErrors]], then: Callable[[], None] | None = None
    ) -> None:
        _record(con, plan, snapshot, result, batches, acknowledgements, then)

    def checkpoint() -> None:
        # DuckDB refuses it while another connection writes; a later commit checkpoints.
        with suppress(duckdb.TransactionException):
            con.execute("CHECKPOINT")

    try:
        with ExitStack() as deferred_checkpoints:
            deferred_checkpoints.enter_context(
                _duckdb_setting(con, "checkpoint_threshold", WRITE_CHECKPOINT_THRESHOLD)
            )
            # Spans of 1, 2, then 4 batches: Redis starts after one batch is rendered, and each
            # span is rendered while Redis writes the one before (a second span of four took
            # longer to render than the first batch to write: Redis waited 0.05 s).
            count = batches.count
            checkpointed = 0
            starts = [s for s in (0, 1, *range(3, count, RENDERED_TOGETHER)) if s < count]
            for first, end in pairwise([*starts, count]):
                last = end - 1
                rendered = render(con, plan, batch_size, first, last)
                span = _rows(
                    first * batch_size,
                    batches.end(last),
                    f"rowid // {batch_size} AS batch_no, k AS key",
                )
                # Committed before any of these batches leaves the process, in the transaction
                # that records the acknowledgements that came meanwhile: a commit costs as much
                # as rendering a batch, so one per span.
                record(
                    sender.acknowledged(), partial(mark_sent, con, name, span, batches.end(last))
                )
                for number, batch in enumerate(rendered, first):
                    sender.put(number, batch)
                if batches.end(last) - checkpointed >= CHECKPOINT_ROWS and end < count:
                    checkpoint()
                    checkpointed = batches.end(last)
            # The last checkpoint, while Redis still writes the batches the sender holds,
            # rather than in a commit after the run's last reply.
            deferred_checkpoints.close()
            checkpoint()
            sender.finish()
            # Each acknowledgement recorded as it comes, while Redis writes the next batches:
            # recording the last dozen together after the last reply took 0.08 s per 1M rows.
            while not sender.finished:
                record(sender.acknowledged(wait=True))
    finally:
        sender.stop()
        con.execute(f"SET threads = {int(threads)}")


@dataclass(frozen=True)
class _Batches:
    """How the rows to send (0 to total - 1, in ``_sync_rows``) are cut into batches."""

    size: int
    total: int

    @property
    def count(self) -> int:
        return -(-self.total // self.size)

    def end(self, number: int) -> int:
        """Rows in batches 0 to ``number``."""
        return min((number + 1) * self.size, self.total)


def _rows(start: int, end: int, columns: str = "*") -> str:
    """Rows ``start`` to ``end`` - 1 of ``_sync_rows`` (numbered by rowid from 0)."""
    return f"(SELECT {columns} FROM _sync_rows WHERE rowid >= {start} AND rowid < {end})"


def _batch_rows_sql(plan: _Plan, batch_size: int, first: int, last: int) -> str:
    """Rows of batches ``first`` to ``last``: rn, batch_no, key, RESP, commands."""
    resp, commands = resp_sql(
        plan.field_names,
        key="k",
        present="nn",
        removed="del",
        values=[f"v{i}" for i in range(len(plan.columns))],
    )
    numbered = f"*, rowid AS rn, rowid // {batch_size} AS batch_no"
    rows = _rows(first * batch_size, (last + 1) * batch_size, numbered)
    return (
        f"SELECT rn, batch_no, k, {resp} AS resp, {commands} AS ncmd FROM ("
        + plan.rendered_from_raw(rows, "rn, batch_no, k, nn, del")
        + ")"
    )


def _standalone_batches(
    con: duckdb.DuckDBPyConnection, plan: _Plan, batch_size: int, first: int, last: int
) -> list[Batch]:
    """Batches ``first`` to ``last`` in chunks of ``CHUNK_ROWS`` rows, rendered by one query;
    ``encode`` hands the bytes over without a copy to str. Rows are joined in no particular
    order (sorting them cost a third of the rendering): each names its key, which is how a
    failed reply finds its row."""
    rendered = con.execute(
        "SELECT batch_no, encode(string_agg(resp, '')), sum(ncmd)"
        f" FROM ({_batch_rows_sql(plan, batch_size, first, last)})"
        f" GROUP BY batch_no, rn // {CHUNK_ROWS} ORDER BY batch_no, rn // {CHUNK_ROWS}"
    ).fetchall()
    batches = {number: Batch(commands=0) for number in range(first, last + 1)}
    for number, payload, commands in rendered:
        batch = batches[number]
        batch.chunks.append(Chunk(payload, int(commands)))
        batch.commands += int(commands)
    return list(batches.values())


def _cluster_batches(
    con: duckdb.DuckDBPyConnection, plan: _Plan, batch_size: int, first: int, last: int
) -> list[Batch]:
    """Batches ``first`` to ``last`` with per-row keys and RESP, grouped by node when sent."""
    rows = con.execute(
        f"SELECT batch_no, k, resp, ncmd FROM ({_batch_rows_sql(plan, batch_size, first, last)})"
        " ORDER BY rn"
    ).fetchall()
    batches = []
    for number in range(first, last + 1):
        chunk = rows[(number - first) * batch_size : (number - first + 1) * batch_size]
        counts = [row[3] for row in chunk]
        batches.append(
            Batch(
                commands=sum(counts),
                keys=[row[1] for row in chunk],
                resps=[row[2] for row in chunk],
                row_commands=counts,
            )
        )
    return batches


def _record(
    con: duckdb.DuckDBPyConnection,
    plan: _Plan,
    snapshot: str,
    result: SyncResult,
    batches: _Batches,
    acknowledgements: Iterator[tuple[int, RowErrors]],
    then: Callable[[], None] | None = None,
) -> None:
    """Move the rows of every batch acknowledged so far into the snapshot in one transaction,
    record refused rows, and run ``then`` in the same transaction unless something failed.
    A failure of the sender is raised after the acknowledgements that came before it are
    recorded; so is a write Redis refused for a reason other than the row's data."""
    acknowledged: list[tuple[int, RowErrors]] = []
    failure: BaseException | None = None
    try:
        for acknowledgement in acknowledgements:
            acknowledged.append(acknowledgement)
    except BaseException as error:  # raised below, once what came before it is recorded
        failure = error
    fatal: list[str] = []
    if acknowledged or then is not None:
        with transaction(con):
            if acknowledged:
                fatal = _advance(con, plan, snapshot, result, batches, acknowledged)
            if then is not None and failure is None and not fatal:
                then()
    if failure is not None:
        raise failure
    if fatal:
        raise SyncError(
            f"sync {plan.spec.name}: Redis refused {len(fatal)} write(s), e.g. {fatal[0]!r};"
            f" fix Redis, then {RERUN}"
        )


def _advance(
    con: duckdb.DuckDBPyConnection,
    plan: _Plan,
    snapshot: str,
    result: SyncResult,
    batches: _Batches,
    acknowledged: list[tuple[int, RowErrors]],
) -> list[str]:
    """Record acknowledged batches (consecutive numbers) in the caller's transaction; the
    errors of writes Redis refused for a reason other than the row's data."""
    first, last = acknowledged[0][0], acknowledged[-1][0]
    failed = [error for _, errors in acknowledged for error in errors]
    fatal = [message for _, message in failed if not message.startswith(ROW_ERRORS)]
    # Batches from the first with a fatal error on stay in doubt: the rerun resends them.
    settled = next(
        (
            number
            for number, errors in acknowledged
            if any(not message.startswith(ROW_ERRORS) for _, message in errors)
        ),
        last + 1,
    )
    record_acknowledged(
        con,
        plan.spec.name,
        result.run_id,
        snapshot,
        plan.spec_hash,
        _rows(
            batches.end(first - 1),
            batches.end(last),
            "k AS key, fp AS fingerprint, nn AS fields_mask, in_snapshot,"
            " op <> 'removed' AS written",
        ),
        acknowledged=batches.end(settled - 1),
        failed=failed,
        refused=not fatal,
    )
    result.rows_written += batches.end(last) - batches.end(first - 1) - len(failed)
    return fatal
