"""Drain the gateway's event streams into raw.events: every accepted event lands exactly once.

Exactly once is at-least-once delivery made idempotent:

- Entries are read with the consumer group, landed in one DuckDB transaction per batch, and
  acknowledged (XACK) only after the commit. A drain that dies before the commit leaves its
  entries pending; one that dies between commit and XACK leaves them pending too, landed.
- The next drain first claims every pending entry (XAUTOCLAIM) and lands it again; the
  message_id primary key turns what had landed into skipped duplicates. The same key lands an
  event an SDK retried (same messageId, new entry) once.
- Claiming every pending entry at once is safe because one drain runs at a time: it opens the
  warehouse before it reads, and DuckDB lets one process hold the file.

An entry that is not a usable event is rejected into raw.events_rejected with the reason and
its raw text, and acknowledged with the rest. Entries the streams' MAXLEN trimmed before they
landed are counted into raw.events_trimmed, with their ids where Redis still knows them.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import duckdb
import pandas as pd

from personalization_pipeline.events.backlog import (
    RedisClient,
    as_text,
    backlog,
    ensure_group,
    group_positions,
)
from personalization_pipeline.events.streams import EventStreams
from personalization_pipeline.keys import EVENT_FIELD, EVENTS_CONSUMER_GROUP, event_stream_keys
from personalization_pipeline.warehouse.schema import ensure_schema
from personalization_pipeline.warehouse.tables import (
    EVENTS,
    EVENTS_REJECTED,
    EVENTS_TRIMMED,
    IDENTITIES,
)
from personalization_pipeline.warehouse.transaction import transaction

DEFAULT_BATCH_SIZE = 1000
DEFAULT_MAX_EVENTS = 200_000
DEFAULT_MAX_SECONDS = 120

SETTINGS = {
    "batch_size": "EVENTS_DRAIN_BATCH_SIZE",
    "max_events": "EVENTS_DRAIN_MAX_EVENTS",
    "max_seconds": "EVENTS_DRAIN_MAX_SECONDS",
}
FIELD = EVENT_FIELD.encode()

# Stream entries of one batch, classified: a reason when the entry cannot land, else its columns.
CLASSIFY_BATCH = """
CREATE OR REPLACE TEMP TABLE drain_batch AS
SELECT position, stream, entry_id, raw,
       CASE WHEN problem IS NOT NULL THEN problem
            WHEN NOT json_valid(raw) THEN 'not valid JSON'
            WHEN json_type(raw::JSON) <> 'OBJECT' THEN 'not a JSON object'
            WHEN json_type(raw::JSON, '$.messageId') IS DISTINCT FROM 'VARCHAR'
                 OR trim(raw::JSON ->> '$.messageId') = '' THEN 'messageId missing or not a string'
            WHEN TRY_CAST(raw::JSON ->> '$.timestamp' AS TIMESTAMPTZ) IS NULL
                THEN 'timestamp missing or not RFC 3339'
            WHEN TRY_CAST(raw::JSON ->> '$.receivedAt' AS TIMESTAMPTZ) IS NULL
                THEN 'receivedAt missing or not RFC 3339'
       END AS reason
FROM drain_entries
"""

REJECT = f"""
INSERT INTO raw.events_rejected ({EVENTS_REJECTED.select_list()})
SELECT stream, entry_id, reason, raw, now() AT TIME ZONE 'UTC'
FROM drain_batch WHERE reason IS NOT NULL
ON CONFLICT DO NOTHING
"""

# One row per messageId: the first entry in the batch wins, a landed one beats them all.
LAND = f"""
INSERT INTO raw.events ({EVENTS.select_list()})
SELECT raw::JSON ->> '$.messageId',
       lower(raw::JSON ->> '$.type'),
       raw::JSON ->> '$.event',
       nullif(raw::JSON ->> '$.userId', ''),
       nullif(raw::JSON ->> '$.anonymousId', ''),
       CAST(raw::JSON ->> '$.timestamp' AS TIMESTAMPTZ) AT TIME ZONE 'UTC',
       CAST(raw::JSON ->> '$.receivedAt' AS TIMESTAMPTZ) AT TIME ZONE 'UTC',
       now() AT TIME ZONE 'UTC',
       stream, entry_id, raw::JSON
FROM drain_batch WHERE reason IS NULL
QUALIFY row_number() OVER (PARTITION BY raw::JSON ->> '$.messageId' ORDER BY position) = 1
ON CONFLICT DO NOTHING
"""

# Identify events with an email, as RudderStack's Redis destination reads traits: top-level
# traits overlay context.traits. Emails are matched trimmed and lowercased.
IDENTIFY = f"""
INSERT INTO analytics.identities ({IDENTITIES.select_list()})
SELECT user_id, email, min(seen), max(seen)
FROM (
    SELECT nullif(trim(raw::JSON ->> '$.userId'), '') AS user_id,
           lower(trim(CASE
               WHEN json_type(raw::JSON, '$.traits.email') = 'VARCHAR'
                   THEN raw::JSON ->> '$.traits.email'
               WHEN json_type(raw::JSON, '$.context.traits.email') = 'VARCHAR'
                   THEN raw::JSON ->> '$.context.traits.email'
           END)) AS email,
           CAST(raw::JSON ->> '$.timestamp' AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS seen
    FROM drain_batch
    WHERE reason IS NULL AND lower(raw::JSON ->> '$.type') = 'identify'
)
WHERE user_id IS NOT NULL AND email <> ''
GROUP BY user_id, email
ON CONFLICT (user_id, email) DO UPDATE SET
    first_seen = least(first_seen, excluded.first_seen),
    last_seen = greatest(last_seen, excluded.last_seen)
"""


@dataclass(frozen=True)
class DrainSettings:
    batch_size: int = DEFAULT_BATCH_SIZE
    """Entries read per stream per batch; one DuckDB transaction per batch."""
    max_events: int = DEFAULT_MAX_EVENTS
    max_seconds: float = DEFAULT_MAX_SECONDS
    """One run stops after this many entries or seconds, so constant load cannot pin it."""

    def __post_init__(self) -> None:
        for name, variable in SETTINGS.items():
            if getattr(self, name) < 1:
                raise ValueError(f"{variable} must be at least 1, got {getattr(self, name)}")


@dataclass
class DrainResult:
    """What one drain did; filled in as it goes."""

    read: int = 0
    """Stream entries handled, claimed ones included."""
    landed: int = 0
    """New rows in raw.events."""
    duplicates: int = 0
    """Entries whose messageId had landed already (SDK retries, re-claimed entries)."""
    rejected: int = 0
    claimed: int = 0
    """Entries left pending by an earlier drain that died, claimed and handled by this one."""
    trimmed: int = 0
    """Entries removed by MAXLEN before they landed: lost, and recorded in raw.events_trimmed."""
    backlog: int = 0
    """Entries still waiting when this run stopped."""
    seconds: float = 0.0


def default_consumer_name() -> str:
    """One name per process run: entries a dead run left pending are told apart in XPENDING."""
    return f"{socket.gethostname()}-{os.getpid()}"


def drain_events(
    client: RedisClient,
    connection: duckdb.DuckDBPyConnection,
    streams: EventStreams,
    settings: DrainSettings,
    prefix: str = "",
    consumer: str | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> DrainResult:
    """Land the streams' events in raw.events until they are empty or a run limit is reached."""
    started = time.monotonic()
    consumer = consumer or default_consumer_name()
    keys = event_stream_keys(streams.shards, prefix)
    ensure_schema(connection)
    # Timestamps without an offset (not RFC 3339, but seen in the wild) are read as UTC.
    connection.execute("SET TimeZone = 'UTC'")
    for key in keys:
        ensure_group(client, key)
    result = DrainResult()
    for key in keys:
        _claim_pending(client, connection, key, consumer, settings, result, log)
    while result.read < settings.max_events and time.monotonic() - started < settings.max_seconds:
        _record_trimmed(client, connection, keys, result, log)
        entries = _read_new(client, keys, consumer, settings.batch_size)
        if not entries:
            break
        _land(client, connection, entries, result)
        log(f"Landed {result.landed} events so far ({result.read} entries read)")
    _record_trimmed(client, connection, keys, result, log)
    _forget_idle_consumers(client, keys)
    result.backlog = backlog(client, keys)
    result.seconds = time.monotonic() - started
    return result


def _claim_pending(
    client: RedisClient,
    connection: duckdb.DuckDBPyConnection,
    key: str,
    consumer: str,
    settings: DrainSettings,
    result: DrainResult,
    log: Callable[[str], None],
) -> None:
    cursor = "0-0"
    while True:
        cursor, entries, deleted = client.xautoclaim(
            key, EVENTS_CONSUMER_GROUP, consumer, 0, cursor, count=settings.batch_size
        )
        if deleted:
            # Read by a drain that died, then trimmed before anyone landed them.
            ids = [as_text(entry_id) for entry_id in deleted]
            _record_loss(connection, key, len(ids), "trimmed while pending", ids)
            result.trimmed += len(ids)
            log(f"{len(ids)} pending entries of {key} were trimmed before they landed")
        if entries:
            result.claimed += len(entries)
            _land(client, connection, [(key, entries)], result)
        if as_text(cursor) == "0-0":
            return


def _read_new(
    client: RedisClient, keys: Sequence[str], consumer: str, count: int
) -> list[tuple[str, list]]:
    # One read per stream (in one round trip): streams are in different cluster slots.
    pipeline = client.pipeline(transaction=False)
    for key in keys:
        pipeline.xreadgroup(EVENTS_CONSUMER_GROUP, consumer, {key: ">"}, count=count)
    replies = pipeline.execute()
    return [(key, reply[0][1]) for key, reply in zip(keys, replies, strict=True) if reply]


def _land(
    client: RedisClient,
    connection: duckdb.DuckDBPyConnection,
    entries: Sequence[tuple[str, list]],
    result: DrainResult,
) -> None:
    """One transaction for the batch, then XACK: an entry is acknowledged only once it landed."""
    rows = [
        (position, key, as_text(entry_id), *_entry_text(fields))
        for position, (key, entry_id, fields) in enumerate(
            (key, entry_id, fields)
            for key, stream_entries in entries
            for entry_id, fields in stream_entries
        )
    ]
    frame = pd.DataFrame(rows, columns=["position", "stream", "entry_id", "raw", "problem"])
    with transaction(connection):
        connection.register("drain_entries", frame)
        connection.execute(CLASSIFY_BATCH)
        connection.unregister("drain_entries")
        connection.execute(REJECT)
        (landed,) = connection.execute(LAND).fetchone()
        connection.execute(IDENTIFY)
        (rejected,) = connection.execute(
            "SELECT count(*) FROM drain_batch WHERE reason IS NOT NULL"
        ).fetchone()
    pipeline = client.pipeline(transaction=False)
    for key, stream_entries in entries:
        pipeline.xack(key, EVENTS_CONSUMER_GROUP, *[entry_id for entry_id, _ in stream_entries])
    pipeline.execute()
    result.read += len(rows)
    result.landed += landed
    result.rejected += rejected
    result.duplicates += len(rows) - rejected - landed


def _entry_text(fields: dict[bytes, bytes]) -> tuple[str | None, str | None]:
    """The event's JSON text, and why it cannot be read as text when that is the case."""
    value = fields.get(FIELD)
    if value is None:
        return _describe_fields(fields), f"no {EVENT_FIELD!r} field"
    try:
        return value.decode("utf-8"), None
    except UnicodeDecodeError:
        # Kept as readable text; the escapes (\xNN) show which bytes were wrong.
        return value.decode("utf-8", "backslashreplace"), "not UTF-8"


def _describe_fields(fields: dict[bytes, bytes]) -> str:
    return " ".join(
        f"{name.decode('utf-8', 'backslashreplace')}={value.decode('utf-8', 'backslashreplace')}"
        for name, value in fields.items()
    )


def _record_trimmed(
    client: RedisClient,
    connection: duckdb.DuckDBPyConnection,
    keys: Sequence[str],
    result: DrainResult,
    log: Callable[[str], None],
) -> None:
    """Count entries trimmed before the group read them, once: after recording them in the
    warehouse, move the group's read counter past them (XGROUP SETID ... ENTRIESREAD). A crash
    in between reports them twice, never zero times."""
    for position in group_positions(client, keys):
        lost = position.unread_trimmed()
        if not lost:
            continue
        _record_loss(connection, position.stream, lost, "trimmed before it was read", [])
        client.xgroup_setid(
            position.stream,
            EVENTS_CONSUMER_GROUP,
            position.last_delivered_id,
            entries_read=position.read_count + lost,
        )
        result.trimmed += lost
        log(
            f"{lost} entries of {position.stream} were trimmed (EVENTS_STREAM_MAX_LENGTH) before "
            "the drain read them: they are lost. Drain more often or raise the stream length"
        )


def _record_loss(
    connection: duckdb.DuckDBPyConnection, stream: str, entries: int, how: str, ids: list[str]
) -> None:
    connection.execute(
        f"INSERT INTO raw.events_trimmed ({EVENTS_TRIMMED.select_list()})"
        " VALUES (now() AT TIME ZONE 'UTC', ?, ?, ?, ?)",
        [stream, entries, how, ids],
    )


def _forget_idle_consumers(client: RedisClient, keys: Sequence[str]) -> None:
    """Each run reads under a new name; drop the names with nothing pending so XINFO CONSUMERS
    does not grow by one per run. A name with pending entries keeps them for the next claim."""
    for key in keys:
        for consumer in client.xinfo_consumers(key, EVENTS_CONSUMER_GROUP):
            if consumer["pending"] == 0:
                client.xgroup_delconsumer(key, EVENTS_CONSUMER_GROUP, consumer["name"])
