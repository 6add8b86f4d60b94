"""The sync's state in the warehouse schema ``sync``: its tables, rejected rows and run log.

- ``sync.snapshot_<name>``: per Redis key, the fingerprint of the values last written
  (``hash()`` of the mapped columns), a bit mask of the fields that were non-null and a
  hash of the spec. A run computes added / changed / removed / unchanged against it in SQL.
  It is advanced after every batch, and only for rows whose replies were all successes,
  so a run that dies midway leaves a snapshot from which the next run sends exactly the
  rows that were not acknowledged.
- ``sync.rejected_rows``: rows that could not be written, with reason and run id.
  Invalid rows (blank key, duplicate key, nothing to write) are re-evaluated every run;
  rows Redis refused (e.g. WRONGTYPE) are skipped until they change, then retried.
- ``sync.runs``: one line per run with its counts.
- ``sync.epochs``: per sync, the epoch marker last stored in Redis. A Redis that no longer
  holds it (restarted without persistence, flushed, failed over to an empty replica) is no
  longer described by the snapshot, so that run rewrites every row.
- ``sync.in_doubt``: keys of batches that were sent but not yet acknowledged, committed
  *before* their commands go out. After a crash they may or may not be in Redis: the next
  run resends their current values and removes the fields of those that left the source.

The diff and the snapshot's advance per batch are the engine's (``engine.py``);
:func:`record_invalid` reads the diff's temp tables ``_sync_cur`` and ``_sync_invalid``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import duckdb

from personalization_pipeline.sync.render import literal
from personalization_pipeline.warehouse.transaction import transaction

if TYPE_CHECKING:
    from personalization_pipeline.sync.engine import SyncResult


def ensure_state(con: duckdb.DuckDBPyConnection, snapshot: str) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS sync")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {snapshot} (key VARCHAR NOT NULL,"
        " fingerprint UBIGINT NOT NULL, fields_mask UBIGINT NOT NULL, spec UBIGINT NOT NULL)"
    )
    con.execute(
        "CREATE TABLE IF NOT EXISTS sync.rejected_rows (sync_name VARCHAR NOT NULL,"
        " run_id VARCHAR NOT NULL, key_value VARCHAR, redis_key VARCHAR, fingerprint UBIGINT,"
        " reason VARCHAR NOT NULL, kind VARCHAR NOT NULL, rejected_at TIMESTAMPTZ NOT NULL)"
    )
    con.execute(
        "CREATE TABLE IF NOT EXISTS sync.runs (sync_name VARCHAR NOT NULL, run_id VARCHAR NOT"
        " NULL, mode VARCHAR, status VARCHAR, added BIGINT, changed BIGINT, removed BIGINT,"
        " unchanged BIGINT, rejected BIGINT, rows_written BIGINT, seconds DOUBLE, error VARCHAR,"
        " finished_at TIMESTAMPTZ)"
    )
    con.execute(
        "CREATE TABLE IF NOT EXISTS sync.epochs (sync_name VARCHAR PRIMARY KEY,"
        " epoch VARCHAR NOT NULL, set_at TIMESTAMPTZ NOT NULL)"
    )
    con.execute(
        "CREATE TABLE IF NOT EXISTS sync.in_doubt (sync_name VARCHAR NOT NULL,"
        " run_id VARCHAR NOT NULL, batch_no BIGINT NOT NULL, key VARCHAR NOT NULL)"
    )


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    found = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, table],
    ).fetchone()
    return bool(found and found[0])


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> Any:
    row = con.execute(sql, params or []).fetchone()
    return row[0] if row else None


def log_run(con, result: SyncResult, started: float, status: str, error: str | None) -> None:
    result.seconds = time.perf_counter() - started
    if result.dry_run:
        return
    con.execute(
        "INSERT INTO sync.runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
        [
            result.sync,
            result.run_id,
            result.mode,
            status,
            result.added,
            result.changed,
            result.removed,
            result.unchanged,
            result.rejected,
            result.rows_written,
            result.seconds,
            error,
        ],
    )


def record_invalid(con: duckdb.DuckDBPyConnection, name: str, run_id: str) -> None:
    """Replace this sync's invalid rows; drop refused rows that changed since (retry them)."""
    with transaction(con):
        con.execute(
            "DELETE FROM sync.rejected_rows WHERE sync_name = ? AND kind = 'invalid'", [name]
        )
        if scalar(con, "SELECT count(*) FROM sync.rejected_rows WHERE sync_name = ?", [name]):
            con.execute(
                "DELETE FROM sync.rejected_rows r WHERE sync_name = ? AND NOT EXISTS"
                " (SELECT 1 FROM _sync_cur c WHERE c.k = r.redis_key AND c.fp = r.fingerprint)",
                [name],
            )
        con.execute(
            "INSERT INTO sync.rejected_rows SELECT ?, ?, key_value, k, fp, reason, 'invalid', now()"
            " FROM _sync_invalid",
            [name, run_id],
        )


def read_epoch(con: duckdb.DuckDBPyConnection, name: str) -> str | None:
    if not table_exists(con, "sync", "epochs"):
        return None
    return scalar(con, "SELECT epoch FROM sync.epochs WHERE sync_name = ?", [name])


def write_epoch(con: duckdb.DuckDBPyConnection, name: str, epoch: str) -> None:
    con.execute("INSERT OR REPLACE INTO sync.epochs VALUES (?, ?, now())", [name, epoch])


def in_doubt_keys(con: duckdb.DuckDBPyConnection, name: str) -> str:
    """A relation of this sync's in-doubt keys (empty when the table does not exist yet)."""
    if not table_exists(con, "sync", "in_doubt"):
        return "(SELECT NULL::VARCHAR AS key WHERE false)"
    return f"(SELECT DISTINCT key FROM sync.in_doubt WHERE sync_name = {literal(name)})"


def mark_in_doubt(
    con: duckdb.DuckDBPyConnection, name: str, run_id: str, first: int, last: int
) -> None:
    """Record the keys of batches ``first`` to ``last`` of ``_sync_rows`` before they are sent."""
    con.execute(
        "INSERT INTO sync.in_doubt SELECT ?, ?, batch_no, k FROM _sync_rows"
        " WHERE batch_no BETWEEN ? AND ?",
        [name, run_id, first, last],
    )


def settle_in_doubt(con: duckdb.DuckDBPyConnection, name: str, run_id: str, batch_no: int) -> None:
    """Batch ``batch_no`` was acknowledged: its keys are known again (call in its transaction)."""
    con.execute(
        "DELETE FROM sync.in_doubt WHERE sync_name = ? AND run_id = ? AND batch_no = ?",
        [name, run_id, batch_no],
    )


def forget_in_doubt(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Every batch of a run was acknowledged, earlier runs' in-doubt keys among them."""
    con.execute("DELETE FROM sync.in_doubt WHERE sync_name = ?", [name])
