"""The stream -> raw.events drain against a real redis-server and real DuckDB files.

Entries are written in the gateway's format (keys.py, events/streams.py) by XADD directly.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import redis

from personalization_pipeline.events.backlog import backlog
from personalization_pipeline.events.streams import EventStreams
from personalization_pipeline.keys import (
    EVENT_FIELD,
    EVENTS_CONSUMER_GROUP,
    event_stream_key,
    event_stream_keys,
    stream_shard,
)
from personalization_pipeline.warehouse.events import DrainResult, DrainSettings, drain_events
from tests.conftest import REPO_ROOT

STREAMS = EventStreams()
KEYS = event_stream_keys(STREAMS.shards)


def event(number: int, **fields: object) -> dict:
    """An event as the gateway stores it: messageId, receivedAt and timestamp always set."""
    return {
        "type": "track",
        "event": "Product Viewed",
        "userId": f"u{number % 37}",
        "anonymousId": None,
        "messageId": f"msg-{number}",
        "timestamp": "2024-05-01T12:00:00.123Z",
        "receivedAt": "2024-05-01T12:00:00.456Z",
        "properties": {"sku": f"sku-{number % 11}"},
        **fields,
    }


def xadd(client: redis.Redis, *events: dict, **options: object) -> None:
    pipeline = client.pipeline(transaction=False)
    for item in events:
        shard = stream_shard(item.get("userId") or item["anonymousId"], STREAMS.shards)
        text = json.dumps(item, separators=(",", ":"))
        pipeline.xadd(event_stream_key(shard), {EVENT_FIELD: text}, **options)
    pipeline.execute()


def drain(client: redis.Redis, warehouse: Path, **settings: int) -> DrainResult:
    with duckdb.connect(str(warehouse)) as connection:
        return drain_events(client, connection, STREAMS, DrainSettings(**settings))


def query(warehouse: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(warehouse)) as connection:
        return connection.execute(sql).fetchall()


def landed_message_ids(warehouse: Path) -> list[str]:
    return [row[0] for row in query(warehouse, "SELECT message_id FROM raw.events")]


def assert_everything_acknowledged(client: redis.Redis) -> None:
    for key in KEYS:
        assert client.xpending(key, EVENTS_CONSUMER_GROUP)["pending"] == 0, key
        (group,) = client.xinfo_groups(key)
        assert group["lag"] == 0, key
    assert backlog(client, KEYS) == 0


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    return tmp_path / "warehouse.duckdb"


def test_events_land_once_with_their_columns_and_are_acknowledged(client, warehouse):
    xadd(client, *[event(n) for n in range(500)])
    xadd(
        client,
        event(
            500,
            type="Identify",
            userId=None,
            anonymousId="anon-1",
            event=None,
            timestamp="2024-05-01T14:00:00.5+02:00",
        ),
    )
    result = drain(client, warehouse, batch_size=64)
    assert (result.read, result.landed, result.duplicates, result.rejected) == (501, 501, 0, 0)
    assert (result.claimed, result.trimmed, result.backlog) == (0, 0, 0)
    assert sorted(landed_message_ids(warehouse)) == sorted(f"msg-{n}" for n in range(501))
    row = query(
        warehouse,
        """SELECT type, event, user_id, anonymous_id, CAST("timestamp" AS VARCHAR),
                  CAST(received_at AS VARCHAR), payload ->> '$.properties.sku'
           FROM raw.events WHERE message_id IN ('msg-3', 'msg-500') ORDER BY message_id""",
    )
    received = "2024-05-01 12:00:00.456"
    assert row == [
        ("track", "Product Viewed", "u3", None, "2024-05-01 12:00:00.123", received, "sku-3"),
        ("identify", None, None, "anon-1", "2024-05-01 12:00:00.5", received, "sku-5"),
    ]
    assert_everything_acknowledged(client)
    # The run's consumer name is gone from the group once it holds nothing.
    assert all(client.xinfo_consumers(key, EVENTS_CONSUMER_GROUP) == [] for key in KEYS)
    assert drain(client, warehouse).read == 0


def test_sdk_retries_with_the_same_message_id_land_once(client, warehouse):
    original = [event(n) for n in range(100)]
    xadd(client, *original)
    retried = [{**item, "receivedAt": "2024-05-01T12:01:00.000Z"} for item in original[:40]]
    xadd(client, *retried)  # same batch as the originals: deduplicated within it
    first = drain(client, warehouse, batch_size=1000)
    xadd(client, *retried[:10])  # a later retry: deduplicated against raw.events
    second = drain(client, warehouse)
    assert (first.read, first.landed, first.duplicates) == (140, 100, 40)
    assert (second.read, second.landed, second.duplicates) == (10, 0, 10)
    ids = landed_message_ids(warehouse)
    assert len(ids) == len(set(ids)) == 100
    # The first entry carrying a messageId is the one kept.
    assert query(warehouse, "SELECT DISTINCT CAST(received_at AS VARCHAR) FROM raw.events") == [
        ("2024-05-01 12:00:00.456",)
    ]
    assert_everything_acknowledged(client)


def test_entries_that_are_not_events_are_rejected_with_a_reason_and_kept(client, warehouse):
    xadd(client, *[event(n) for n in range(20)])
    stream = KEYS[0]
    bad = {
        '{"messageId": "x", "timestamp": ': "not valid JSON",
        '["an", "array"]': "not a JSON object",
        json.dumps({**event(900), "messageId": 900}): "messageId missing or not a string",
        json.dumps({**event(901), "timestamp": "yesterday"}): "timestamp missing or not RFC 3339",
        json.dumps({k: v for k, v in event(902).items() if k != "receivedAt"}): (
            "receivedAt missing or not RFC 3339"
        ),
    }
    entry_ids = {client.xadd(stream, {EVENT_FIELD: text}).decode(): text for text in bad}
    not_utf8 = client.xadd(stream, {EVENT_FIELD: b'{"messageId":"\xff"}'}).decode()
    no_field = client.xadd(stream, {"other": "value"}).decode()
    xadd(client, *[event(n) for n in range(20, 40)])

    result = drain(client, warehouse, batch_size=7)

    assert (result.read, result.landed, result.rejected) == (47, 40, 7)
    assert sorted(landed_message_ids(warehouse)) == sorted(f"msg-{n}" for n in range(40))
    rejected = {
        entry_id: (reason, raw)
        for entry_id, reason, raw in query(
            warehouse, "SELECT entry_id, reason, raw FROM raw.events_rejected"
        )
    }
    assert rejected == {
        **{entry_id: (bad[text], text) for entry_id, text in entry_ids.items()},
        not_utf8: ("not UTF-8", '{"messageId":"\\xff"}'),
        no_field: ("no 'e' field", "other=value"),
    }
    assert query(warehouse, "SELECT DISTINCT stream FROM raw.events_rejected") == [(stream,)]
    assert_everything_acknowledged(client)


def test_entries_trimmed_before_they_were_read_are_reported_once(client, warehouse):
    xadd(client, *[event(n) for n in range(100)])
    assert drain(client, warehouse).landed == 100
    # The drain stops; the gateway keeps writing with an exact MAXLEN of 50 per stream.
    later = [event(n) for n in range(100, 700)]
    xadd(client, *later, maxlen=50, approximate=False)
    surviving = sum(client.xlen(key) for key in KEYS)
    assert surviving == 50 * len(KEYS)

    result = drain(client, warehouse, batch_size=30)

    assert result.trimmed == 600 - surviving
    assert result.landed == surviving
    lost = query(warehouse, "SELECT stream, entries, how FROM raw.events_trimmed ORDER BY stream")
    assert sum(entries for _, entries, _ in lost) == 600 - surviving
    assert {how for _, _, how in lost} == {"trimmed before it was read"}
    assert_everything_acknowledged(client)
    # Reported once: the group's counter was moved past them, so a new run finds nothing.
    xadd(client, event(5000), maxlen=50, approximate=False)
    again = drain(client, warehouse)
    assert (again.trimmed, again.landed) == (0, 1)
    assert query(warehouse, "SELECT sum(entries) FROM raw.events_trimmed") == [(600 - surviving,)]


def test_a_stream_trimmed_before_the_first_drain_made_its_group(client, warehouse):
    xadd(client, *[event(n) for n in range(400)], maxlen=60, approximate=False)
    result = drain(client, warehouse)
    assert (result.landed, result.trimmed) == (60 * len(KEYS), 400 - 60 * len(KEYS))
    assert_everything_acknowledged(client)


def test_a_run_stops_at_its_event_limit_and_reports_the_backlog(client, warehouse):
    xadd(client, *[event(n) for n in range(1000)])
    first = drain(client, warehouse, batch_size=50, max_events=300)
    assert first.read == 400  # two batches of 50 per stream: it stops after the batch at 300
    assert first.backlog == 1000 - first.read == backlog(client, KEYS)
    rest = drain(client, warehouse, batch_size=50)
    assert first.landed + rest.landed == 1000 == len(set(landed_message_ids(warehouse)))
    assert_everything_acknowledged(client)


def test_identify_events_with_an_email_feed_identities(client, warehouse):
    xadd(
        client,
        event(1, type="identify", userId="u1", context={"traits": {"email": " Ann@X.com "}}),
        # Top-level traits overlay context.traits, as in RudderStack's Redis destination.
        event(
            2,
            type="identify",
            userId="u2",
            timestamp="2024-05-02T00:00:00Z",
            traits={"email": "bob@x.com"},
            context={"traits": {"email": "old@x.com"}},
        ),
        event(
            3,
            type="identify",
            userId="u2",
            timestamp="2024-04-01T00:00:00Z",
            context={"traits": {"email": "BOB@x.com"}},
        ),
        event(4, type="identify", userId="u4", context={"traits": {"email": 42}}),
        event(5, type="identify", userId=None, anonymousId="a5", traits={"email": "anon@x.com"}),
        event(6, type="track", userId="u6", context={"traits": {"email": "track@x.com"}}),
    )
    drain(client, warehouse)
    assert query(
        warehouse,
        "SELECT user_id, email, CAST(first_seen AS DATE)::VARCHAR, CAST(last_seen AS DATE)::VARCHAR"
        " FROM analytics.identities ORDER BY ALL",
    ) == [
        ("u1", "ann@x.com", "2024-05-01", "2024-05-01"),
        ("u2", "bob@x.com", "2024-04-01", "2024-05-02"),
    ]


# --- kill -9 ----------------------------------------------------------------------------------


def start_worker(redis_url: str, warehouse: Path, crash_point: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.drain_worker", redis_url, str(warehouse), "40", crash_point],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


def wait_for(worker: subprocess.Popen, predicate) -> list[str]:
    lines = []
    for line in worker.stdout:
        lines.append(line.strip())
        if predicate(lines):
            return lines
    worker.wait(10)
    pytest.fail(f"worker exited early: {lines} {worker.stderr.read()}")


def kill_9(worker: subprocess.Popen) -> None:
    os.kill(worker.pid, signal.SIGKILL)
    assert worker.wait(10) == -signal.SIGKILL
    worker.stdout.close()
    worker.stderr.close()


@pytest.mark.parametrize("crash_point", ["after-read", "before-ack", "after-ack", "mid-run"])
def test_a_drain_killed_with_sigkill_loses_and_duplicates_nothing(
    crash_point: str, redis_url: str, client, warehouse
):
    total = 3000
    xadd(client, *[event(n) for n in range(total)])
    if crash_point == "mid-run":
        worker = start_worker(redis_url, warehouse, "none")
        wait_for(worker, lambda lines: sum(line.startswith("progress") for line in lines) >= 2)
        # Anywhere: reading, inside the DuckDB commit, acknowledging.
        time.sleep(random.uniform(0, 0.05))
    else:
        worker = start_worker(redis_url, warehouse, crash_point)
        wait_for(worker, lambda lines: lines[-1] == "crash-point")
    kill_9(worker)
    pending = sum(client.xpending(key, EVENTS_CONSUMER_GROUP)["pending"] for key in KEYS)
    if crash_point in ("after-read", "before-ack"):
        assert pending > 0, "the crash must leave delivered, unacknowledged entries behind"
    landed_before = len(landed_message_ids(warehouse))

    result = drain(client, warehouse)

    assert result.claimed == pending
    if crash_point == "before-ack":
        assert result.duplicates == pending  # committed by the dead drain, skipped now
    if crash_point == "after-read":
        assert landed_before == 0 and result.duplicates == 0
    if crash_point == "after-ack":
        # What the dead drain acknowledged must be in the warehouse already.
        assert landed_before > 0 and result.landed == total - landed_before
    ids = landed_message_ids(warehouse)
    assert len(ids) == len(set(ids)) == total
    assert set(ids) == {f"msg-{n}" for n in range(total)}
    assert (result.rejected, result.trimmed) == (0, 0)
    assert_everything_acknowledged(client)
    assert all(client.xinfo_consumers(key, EVENTS_CONSUMER_GROUP) == [] for key in KEYS)


def test_pending_entries_trimmed_before_they_landed_are_reported_with_their_ids(client, warehouse):
    xadd(client, *[event(n) for n in range(200)])
    first = drain(client, warehouse, batch_size=10, max_events=1)
    assert first.landed == 10 * len(KEYS)
    # A consumer reads five entries and dies; then trimming removes every entry of the streams.
    delivered = client.xreadgroup(EVENTS_CONSUMER_GROUP, "dead-drain", {KEYS[0]: ">"}, count=5)
    dead_ids = sorted(entry_id.decode() for entry_id, _ in delivered[0][1])
    for key in KEYS:
        client.xtrim(key, maxlen=0, approximate=False)

    result = drain(client, warehouse)

    lost = query(
        warehouse,
        "SELECT how, sum(entries), flatten(list(entry_ids)) FROM raw.events_trimmed GROUP BY how",
    )
    assert sorted((how, entries, sorted(ids)) for how, entries, ids in lost) == [
        ("trimmed before it was read", 200 - first.landed - 5, []),
        ("trimmed while pending", 5, dead_ids),
    ]
    assert (result.claimed, result.landed, result.trimmed) == (0, 0, 200 - first.landed)
    assert_everything_acknowledged(client)
