"""The sync under the faults production brings: a frozen Redis, a Redis that lost its data, and
kill -9 of the sync process with batches in flight. Real redis-servers, real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
import redis

from personalization_pipeline.keys import sync_epoch_key
from personalization_pipeline.sync import engine
from personalization_pipeline.sync.engine import sync_table
from personalization_pipeline.sync.identify import user_key
from personalization_pipeline.sync.redis_config import RedisDestination, RedisUnavailable, connect
from personalization_pipeline.sync.writer import StandaloneWriter
from tests.conftest import REPO_ROOT, free_port, start_redis_server
from tests.test_sync_engine import SPEC, con, expected_hashes, load, redis_hashes

__all__ = ["con"]  # a fixture, shared with the engine's tests


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own, to freeze, kill or restart; always resumed and stopped."""
    port = free_port()
    server = start_redis_server(tmp_path / "redis", port)
    yield server, port
    if server.poll() is None:
        os.kill(server.pid, signal.SIGCONT)
        server.kill()
        server.wait(10)


def fault_at_send(client, send: int, fault: Callable[[], object]) -> StandaloneWriter:
    """The real writer, calling ``fault`` just before it sends batch number ``send`` (1-based)."""

    class Faulty(StandaloneWriter):
        sent = 0

        def write(self, batch):
            self.sent += 1
            if self.sent == send:
                fault()
            return super().write(batch)

    return Faulty(client)


def test_a_frozen_redis_fails_the_run_within_the_timeout(con, own_redis):
    server, port = own_redis
    client = connect(RedisDestination.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=1))
    load(con, 3000)
    freeze = fault_at_send(client, 2, lambda: os.kill(server.pid, signal.SIGSTOP))
    started = time.monotonic()
    with pytest.raises(RedisUnavailable, match=r"did not answer.*REDIS_SOCKET_TIMEOUT"):
        sync_table(con, freeze, SPEC, batch_size=1000)
    assert time.monotonic() - started < 10
    assert con.execute("SELECT status FROM sync.runs").fetchall() == [("failed",)]


def test_tls_spoken_to_a_plain_port_fails_instead_of_hanging(own_redis):
    _, port = own_redis
    started = time.monotonic()
    with pytest.raises(RedisUnavailable, match="did not answer within 1s"):
        connect(
            RedisDestination.from_url(
                f"rediss://127.0.0.1:{port}/0", socket_timeout=1, skip_verify=True
            )
        )
    assert time.monotonic() - started < 5


def test_a_flushed_redis_is_rewritten_by_the_next_incremental_run(con, redis_client):
    load(con, 2000)
    sync_table(con, redis_client, SPEC)
    redis_client.flushall()
    result = sync_table(con, redis_client, SPEC)
    assert result.full_sync_reason and "marker" in result.full_sync_reason
    assert result.rows_written == 2000
    assert redis_hashes(redis_client) == expected_hashes(con)
    quiet = sync_table(con, redis_client, SPEC)
    assert (quiet.full_sync_reason, quiet.rows_written, quiet.unchanged) == (None, 0, 2000)


def test_a_dry_run_says_it_would_rewrite_a_flushed_redis(con, redis_client):
    load(con, 100)
    sync_table(con, redis_client, SPEC)
    redis_client.flushall()
    dry = sync_table(con, redis_client, SPEC, dry_run=True)
    assert dry.full_sync_reason and dry.rows_written == 0
    assert redis_client.dbsize() == 0


def test_a_warehouse_from_before_epochs_is_rewritten_once(con, redis_client):
    load(con, 100)
    sync_table(con, redis_client, SPEC)
    con.execute("DROP TABLE sync.epochs")
    redis_client.delete(sync_epoch_key(SPEC.name))
    result = sync_table(con, redis_client, SPEC)
    assert "older version" in result.full_sync_reason and result.rows_written == 100


def test_redis_restarting_empty_mid_run_is_repaired_by_a_plain_rerun(con, tmp_path, own_redis):
    server, port = own_redis
    url = f"redis://127.0.0.1:{port}/0"
    load(con, 3000)
    stop = fault_at_send(connect(url), 3, lambda: (server.kill(), server.wait(10)))
    with pytest.raises(RedisUnavailable, match="rerun"):
        sync_table(con, stop, SPEC, batch_size=500)
    acknowledged = con.execute("SELECT count(*) FROM sync.snapshot_user_profiles").fetchone()[0]
    assert 0 < acknowledged < 3000
    restarted = start_redis_server(tmp_path / "redis", port)
    try:
        client = connect(url)
        result = sync_table(con, client, SPEC)
        assert result.full_sync_reason
        assert redis_hashes(redis.Redis(port=port, decode_responses=True)) == expected_hashes(con)
    finally:
        restarted.kill()
        restarted.wait(10)


def test_a_flush_during_the_run_fails_it_and_the_rerun_repairs(con, redis_client):
    load(con, 3000)
    flush = fault_at_send(redis_client, 2, redis_client.flushall)
    with pytest.raises(RedisUnavailable, match="lost its data while this run wrote"):
        sync_table(con, flush, SPEC, batch_size=1000)
    sync_table(con, redis_client, SPEC)
    assert redis_hashes(redis_client) == expected_hashes(con)


# The sync run in a child process that stops dead (so it can be killed -9) at a chosen point:
# right after the last chunk of batch K went out, or right after its replies came back but
# before the warehouse recorded them. It writes the keys of batch K to a file first, so the
# test knows what was in flight.
CRASHING_SYNC = textwrap.dedent(
    """
    import json, sys, time
    import duckdb
    from personalization_pipeline.sync.engine import sync_table
    from personalization_pipeline.sync.redis_config import connect
    from personalization_pipeline.sync.writer import StandaloneWriter
    from tests.test_sync_engine import SPEC

    database, url, mode, point, batch, flag = sys.argv[1:]
    con = duckdb.connect(database)

    class Stops(StandaloneWriter):
        # Called on the engine's sender thread: the keys in flight are read from the payloads
        # that went out, not from DuckDB (whose connection the engine's thread is using).
        written = 0
        writing = None

        def stop(self, stopped):
            keys = {}
            for chunk in stopped.chunks:
                lines, at = chunk.payload.split(b"\\r\\n"), 0
                while at < len(lines) - 1:  # each command: *n, then n (length, text) pairs
                    keys[lines[at + 4].decode()] = None
                    at += 1 + 2 * int(lines[at][1:])
            with open(flag + ".tmp", "w") as handle:
                json.dump(list(keys), handle)
            import os
            os.rename(flag + ".tmp", flag)
            time.sleep(600)

        def send_chunk(self, line, chunk):
            super().send_chunk(line, chunk)
            last = self.writing.chunks[-1]
            if point == "sent" and self.written == int(batch) and chunk is last:
                time.sleep(0.3)  # let Redis apply it; some of its replies are still unread
                self.stop(self.writing)

        def write(self, batch_to_write):
            self.writing = batch_to_write
            errors = super().write(batch_to_write)
            self.written += 1
            if point == "acknowledged" and self.written == int(batch) + 1:
                self.stop(batch_to_write)
            return errors

    sync_table(con, Stops(connect(url)), SPEC, mode=mode, batch_size=1000)
    """
)


def kill_sync_midway(database: Path, url: str, mode: str, point: str, batch: int) -> list[str]:
    """Run the sync in a child, kill -9 it at ``point`` of ``batch``; the keys in flight."""
    flag = database.parent / "in_flight.json"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CRASHING_SYNC,
            str(database),
            url,
            mode,
            point,
            str(batch),
            str(flag),
        ],
        cwd=REPO_ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while not flag.exists():
            assert child.poll() is None, "the sync finished or died before the kill point"
            assert time.monotonic() < deadline, "the sync never reached the kill point"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    return json.loads(flag.read_text())


@pytest.mark.parametrize("mode", ["upsert", "mirror", "full"])
@pytest.mark.parametrize(("point", "batch"), [("sent", 2), ("acknowledged", 1)])
def test_kill_9_with_batches_in_flight_then_reverted_and_deleted_rows(
    tmp_path, redis_url, redis_client, mode, point, batch
):
    database = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(database))
    con.execute(
        "CREATE TABLE user_profiles (user_id VARCHAR, email VARCHAR, membership_status VARCHAR,"
        " income_bracket VARCHAR, ltv DOUBLE, vip BOOLEAN)"
    )
    load(con, 3000)
    sync_table(con, redis_client, SPEC)
    # A change to every old row and 3,000 new rows, synced by a run that is killed midway.
    con.execute("CREATE TABLE before_change AS SELECT * FROM user_profiles")
    con.execute("UPDATE user_profiles SET email = 'changed-' || email, ltv = NULL")
    load(con, 3000, start=3000)
    con.close()
    in_flight = kill_sync_midway(database, redis_url, mode, point, batch)

    con = duckdb.connect(str(database))
    users = sorted(key.removeprefix("user:") for key in in_flight)
    old = [user for user in users if int(user[1:]) < 3000]
    new = [user for user in users if int(user[1:]) >= 3000]
    assert len(users) == 1000 and len(old) >= 20, "the batch in flight must hold changed rows"
    reverted, deleted = old[10:], old[:10] + new[:10]
    # Rows changed back to what the snapshot still says, and users deleted, before the rerun.
    con.execute(
        "UPDATE user_profiles p SET email = b.email, ltv = b.ltv FROM before_change b"
        " WHERE p.user_id = b.user_id AND list_contains(?, p.user_id)",
        [reverted],
    )
    con.execute("DELETE FROM user_profiles WHERE list_contains(?, user_id)", [deleted])
    sync_table(con, redis_client, SPEC, mode=mode)
    assert redis_hashes(redis_client) == expected_hashes(con)
    for user in deleted:
        assert not redis_client.exists(f"user:{user}"), f"{user} was deleted but kept its fields"
    assert con.execute("SELECT count(*) FROM sync.in_doubt").fetchone()[0] == 0
    con.close()


class LosesSecondReply(StandaloneWriter):
    """Writes the second batch, then loses its replies: it is in Redis, not in the snapshot."""

    received = 0

    def write(self, batch):
        self.received += 1
        if self.received == 2:
            super().write(batch)
            raise redis.ConnectionError("Connection reset by peer (injected)")
        return super().write(batch)


def fail_after_writing_the_second_batch(con, client) -> list[str]:
    """A sync in batches of 1,000 that dies so; the keys in Redis but not in the snapshot."""
    with pytest.raises(RedisUnavailable):
        sync_table(con, LosesSecondReply(client), SPEC, batch_size=1000)
    recorded = {
        row[0] for row in con.execute("SELECT key FROM sync.snapshot_user_profiles").fetchall()
    }
    return sorted(set(redis_hashes(client)) - recorded)


def test_rows_in_doubt_outlive_a_second_failed_run(con, redis_client, monkeypatch):
    """A run dies with a batch written but not recorded; the next dies before sending
    anything, having replaced the plan the first run's markers point into; the third still
    repairs the rows of the first run's window, here a user deleted meanwhile."""
    load(con, 3000)
    unrecorded = fail_after_writing_the_second_batch(con, redis_client)
    assert len(unrecorded) == 1000, "the second batch reached Redis but not the snapshot"
    gone = unrecorded[0].removeprefix("user:")
    con.execute("DELETE FROM user_profiles WHERE user_id = ?", [gone])

    def fails(*args):
        raise OSError("No space left on device (injected)")

    # The second run replaces the plan, then dies before it marks anything as sent.
    monkeypatch.setattr(engine, "mark_sent", fails)
    with pytest.raises(RedisUnavailable):
        sync_table(con, redis_client, SPEC, batch_size=1000)
    monkeypatch.undo()
    assert redis_client.exists(f"user:{gone}")  # nothing was sent

    sync_table(con, redis_client, SPEC, batch_size=1000)
    assert not redis_client.exists(f"user:{gone}")
    assert redis_hashes(redis_client) == expected_hashes(con)
    assert con.execute("SELECT count(*) FROM sync.in_doubt").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM sync.sending").fetchone()[0] == 0


# Keys the plan's JSON arrays must carry exactly: quotes, backslashes, control characters, a
# NUL, non-ASCII, and text that looks like JSON itself.
ODD_USER_IDS = [
    'quo"te',
    "back\\slash",
    "new\nline",
    "nul\x00byte",
    "tab\tinside",
    "émile 東京",
    "[1,2]",
]


def test_odd_keys_in_doubt_are_repaired_exactly(con, redis_client):
    load(con, 1000)
    con.executemany(
        "INSERT INTO user_profiles VALUES (?, 'odd@example.com', 'gold', NULL, 1, true)",
        [[user] for user in ODD_USER_IDS],
    )
    unrecorded = fail_after_writing_the_second_batch(con, redis_client)
    assert unrecorded == sorted(user_key(user) for user in ODD_USER_IDS)
    # Gone from the source before the rerun: only the plan's window says Redis holds them.
    con.execute("DELETE FROM user_profiles WHERE list_contains(?, user_id)", [ODD_USER_IDS])
    sync_table(con, redis_client, SPEC, batch_size=1000)
    assert [key for key in unrecorded if redis_client.exists(key)] == []
    assert redis_hashes(redis_client) == expected_hashes(con)


def test_a_window_left_by_the_plan_of_a_row_per_key_is_repaired(con, redis_client):
    """A warehouse whose unfinished run was made by a version that kept the plan as a row
    per key (``sync.pending_<name>``, before December 2026): the upgrade repairs it."""
    load(con, 3000)
    unrecorded = fail_after_writing_the_second_batch(con, redis_client)
    con.execute(
        "CREATE TABLE sync.pending_user_profiles AS SELECT (batch_no * 1000 + row_number()"
        " OVER (PARTITION BY batch_no) - 1)::BIGINT AS rn, key FROM (SELECT batch_no,"
        " unnest(from_json(keys, '[\"VARCHAR\"]')) AS key FROM sync.plan_user_profiles)"
    )
    con.execute("DROP TABLE sync.plan_user_profiles")
    gone = unrecorded[0]
    con.execute("DELETE FROM user_profiles WHERE user_id = ?", [gone.removeprefix("user:")])
    sync_table(con, redis_client, SPEC, batch_size=1000)
    assert not redis_client.exists(gone)
    assert redis_hashes(redis_client) == expected_hashes(con)
    tables = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    assert ("pending_user_profiles",) not in tables


def test_a_rewrite_of_a_flushed_redis_that_dies_midway_is_finished_by_the_rerun(con, redis_client):
    """The rewrite sets a new epoch in Redis before its first batch; had the warehouse
    recorded it too, the rerun would have trusted a snapshot describing the flushed Redis
    for every row not rewritten yet (found by kill -9 of a 1M-row rewrite: 60,000 rows never
    came back)."""
    load(con, 3000)
    sync_table(con, redis_client, SPEC, batch_size=1000)
    redis_client.flushall()
    fail_after_writing_the_second_batch(con, redis_client)
    assert redis_client.dbsize() == 2001, "two batches and the epoch marker; the third never went"
    result = sync_table(con, redis_client, SPEC, batch_size=1000)
    assert "did not finish" in result.full_sync_reason
    assert redis_hashes(redis_client) == expected_hashes(con)
    assert sync_table(con, redis_client, SPEC, batch_size=1000).rows_written == 0
