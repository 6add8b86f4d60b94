"""The sync engine against a real redis-server and real DuckDB files in tmp_path."""

from __future__ import annotations

import math
import random
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import duckdb
import pytest
import redis
from redis.crc import key_slot

from personalization_pipeline.resources.redis import redact
from personalization_pipeline.sync import engine
from personalization_pipeline.sync.engine import (
    SENDER_DEPTH,
    SyncError,
    SyncSpec,
    render_rows,
    sync_table,
)
from personalization_pipeline.sync.identify import (
    IdentifyError,
    identify_fields,
    js_string,
    user_key,
)
from personalization_pipeline.sync.redis_config import RedisDestination, RedisUnavailable, connect
from personalization_pipeline.sync.writer import (
    CHUNK_ROWS,
    REDIRECT_ROUNDS,
    Batch,
    Chunk,
    ClusterWriter,
    StandaloneWriter,
)
from tests.conftest import free_port, start_redis_server
from tests.redis_fixtures import (
    begin_migration,
    cluster_nodes,
    finish_migration,
    owner,
    sync_acl_setuser,
)

FIELDS = ["email", "membership_status", "income_bracket", "ltv", "vip"]
SPEC = SyncSpec("user_profiles", "user_profiles", "user_id", FIELDS)


@pytest.fixture
def con(tmp_path):
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    connection.execute(
        "CREATE TABLE user_profiles (user_id VARCHAR, email VARCHAR, membership_status VARCHAR,"
        " income_bracket VARCHAR, ltv DOUBLE, vip BOOLEAN)"
    )
    yield connection
    connection.close()


def load(con, rows: int, start: int = 0) -> None:
    con.execute(
        f"""INSERT INTO user_profiles SELECT 'u' || i, 'u' || i || '@example.com',
            ['gold', 'silver'][1 + i % 2], CASE WHEN i % 3 = 0 THEN NULL ELSE '50-75k' END,
            i / 4, i % 2 = 0 FROM range({start}, {start + rows}) t(i)"""
    )


def expected_hashes(con, spec: SyncSpec = SPEC, prefix: str = "") -> dict[str, dict[str, str]]:
    """What RudderStack would hold for each valid row, from the identify module alone."""
    columns = list(spec.fields)
    rows = con.execute(
        f"SELECT {spec.key_column}, {', '.join(columns)} FROM {spec.relation}"
    ).fetchall()
    counts: dict[str, int] = {}
    encoded = {}
    for user_id, *values in rows:
        try:
            key = user_key(user_id, prefix)
            traits = {spec.fields[c]: v for c, v in zip(columns, values, strict=True)}
            encoded[key] = identify_fields(traits)
        except IdentifyError:
            continue
        counts[key] = counts.get(key, 0) + 1
    return {key: fields for key, fields in encoded.items() if counts[key] == 1}


def redis_hashes(client) -> dict[str, dict[str, str]]:
    return {key: client.hgetall(key) for key in client.scan_iter(count=1000, _type="HASH")}


def test_sql_rendering_equals_the_identify_module_on_random_data(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    rnd = random.Random(4)
    specials = [
        0.0,
        -0.0,
        1e21,
        1e-7,
        1e-6,
        1e-4,
        9.999e-5,
        1e16,
        9999999999999998.0,
        1e15,
        0.1,
        123.456,
        1.5e300,
        -2.5e-300,
        5e-324,
        math.nan,
        math.inf,
        -math.inf,
    ]

    def double():
        if rnd.random() < 0.3:
            return rnd.choice(specials)
        return rnd.choice([-1, 1]) * rnd.random() * 10.0 ** rnd.randint(-12, 25)

    big = [0, 1, -1, 2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63), 12345678901234567]
    rows = []
    for i in range(1500):
        rows.append(
            (
                rnd.choice([f"u{i}", f" u{i} ", f"ü{i}\t", str(i)]),
                rnd.choice([None, "", "x'y", '{"a":1}', "é\r\n€"]),
                rnd.choice([None, True, False]),
                rnd.choice([None, rnd.randint(-(2**31), 2**31 - 1)]),
                rnd.choice([None, rnd.choice(big), rnd.randint(-(2**63), 2**63 - 1)]),
                rnd.choice([None, double()]),
                rnd.choice([None, Decimal(rnd.randint(-(10**9), 10**9)) / 100]),
                rnd.choice([None, Decimal(rnd.randint(-(10**30), 10**30)) / 10**10]),
                rnd.choice([None, [], [double() for _ in range(3)]]),
                rnd.choice([None, ["a", None, 'q"'], [rnd.choice(big)]]),
            )
        )
    con.execute(
        "CREATE TABLE t (id VARCHAR, s VARCHAR, b BOOLEAN, i INTEGER, g BIGINT, d DOUBLE,"
        " small DECIMAL(11,2), wide DECIMAL(38,10), dl DOUBLE[], vl VARCHAR[])"
    )
    for row in rows:
        row = list(row)
        if isinstance(row[9], list) and row[9] and isinstance(row[9][0], int):
            row[9] = [str(v) for v in row[9]]
        con.execute("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
    spec = SyncSpec("t", "t", "id", ["s", "b", "i", "g", "d", "small", "wide", "dl", "vl"])
    rendered = render_rows(con, spec, prefix=" p ")
    values = con.execute("SELECT * FROM t").fetchall()
    assert len(rendered) == len(values)
    for (key, fields), (user_id, *columns) in zip(rendered, values, strict=True):
        assert key == user_key(user_id, " p ")
        traits = dict(zip(spec.fields, columns, strict=True))
        try:
            expected = identify_fields(traits)
        except IdentifyError:
            expected = {}
        assert fields == expected, (user_id, traits)
    assert js_string(-0.0) == "-0"
    con.close()


def test_first_sync_writes_every_row_as_rudderstack_would(con, redis_client):
    load(con, 2500)
    result = sync_table(con, redis_client, SPEC, batch_size=1000)
    assert (result.added, result.changed, result.unchanged, result.rejected) == (2500, 0, 0, 0)
    assert result.rows_written == 2500 and result.mode == "upsert"
    assert redis_hashes(redis_client) == expected_hashes(con)
    assert redis_client.hgetall("user:u1") == {
        "email": "u1@example.com",
        "membership_status": "silver",
        "income_bracket": "50-75k",
        "ltv": "0.25",
        "vip": "false",
    }
    again = sync_table(con, redis_client, SPEC)
    assert (again.unchanged, again.rows_written) == (2500, 0)
    meta = again.metadata()
    assert set(meta) >= {"added", "changed", "removed", "unchanged", "rejected", "rows_written"}
    assert {"seconds", "rows_per_second", "mode"} <= set(meta)


def test_only_changed_rows_are_written_and_nulls_are_removed(con, redis_client):
    load(con, 100)
    sync_table(con, redis_client, SPEC)
    redis_client.hset("user:u1", "recent_five_purchases.purchase_1", "sku-1")
    con.execute(
        "UPDATE user_profiles SET income_bracket = NULL, email = 'new' WHERE user_id = 'u1'"
    )
    result = sync_table(con, redis_client, SPEC)
    assert (result.changed, result.unchanged, result.rows_written) == (1, 99, 1)
    assert redis_client.hgetall("user:u1") == {
        "email": "new",
        "membership_status": "silver",
        "ltv": "0.25",
        "vip": "false",
        "recent_five_purchases.purchase_1": "sku-1",
    }


def test_remove_nulls_off_keeps_old_fields_like_rudderstack(con, redis_client):
    load(con, 10)
    sync_table(con, redis_client, SPEC)
    con.execute("UPDATE user_profiles SET income_bracket = NULL WHERE user_id = 'u1'")
    sync_table(con, redis_client, SPEC, remove_nulls=False)
    assert redis_client.hget("user:u1", "income_bracket") == "50-75k"


class FailingWriter(StandaloneWriter):
    """The real writer, losing its connection after ``batches`` acknowledged batches."""

    def __init__(self, client, batches: int) -> None:
        super().__init__(client)
        self.left = batches

    def write(self, batch):
        if self.left == 0:
            raise redis.ConnectionError("Connection reset by peer (injected)")
        self.left -= 1
        return super().write(batch)


def test_a_run_that_dies_midway_resumes_with_exactly_the_unsent_rows(con, redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    load(con, 5000)
    with pytest.raises(RedisUnavailable, match="rerun: it resends what Redis did not acknowledge"):
        sync_table(con, FailingWriter(client, 3), SPEC, batch_size=1000)
    snapshot = con.execute("SELECT count(*) FROM sync.snapshot_user_profiles").fetchone()[0]
    assert snapshot == 3000
    status = con.execute("SELECT status, rows_written FROM sync.runs").fetchall()
    assert status == [("failed", 3000)]
    result = sync_table(con, client, SPEC, batch_size=1000)
    assert (result.added, result.unchanged, result.rows_written) == (2000, 3000, 2000)
    assert redis_hashes(client) == expected_hashes(con)
    client.close()


def test_connection_refused_names_the_fix():
    port = free_port()
    with pytest.raises(RedisUnavailable) as error:
        connect(f"redis://127.0.0.1:{port}/0")
    assert str(error.value) == (
        f"Redis at redis://127.0.0.1:{port}/0 refused the connection:"
        " start redis-server or set REDIS_URL"
    )


def test_refused_credentials_say_to_put_them_in_redis_url(tmp_path):
    port = free_port()
    server = start_redis_server(tmp_path / "auth", port)
    redis.Redis(port=port).config_set("requirepass", "s3cret")
    hint = (
        "put user:password in REDIS_URL (redis://user:password@host:6379/0, or "
        "redis://:password@host:6379/0 for the default user)"
    )
    try:
        # One case only: redis-py retries a refused login with backoff for seconds.
        with pytest.raises(RedisUnavailable) as error:
            connect(f"redis://127.0.0.1:{port}/0")
        message = str(error.value)
        assert f"127.0.0.1:{port}/0 needs a password" in message and message.endswith(hint)
        connect(f"redis://:s3cret@127.0.0.1:{port}/0").close()
    finally:
        server.terminate()
        server.wait(10)


def test_redact_hides_the_password():
    assert redact("redis://bob:s3cret@cache.internal:6380/2") == "redis://bob@cache.internal:6380/2"
    assert redact("rediss://:s3cret@cache.internal") == "rediss://cache.internal:6379/0"


def test_mirror_guard_fails_before_writing_anything(con, redis_client):
    load(con, 100)
    sync_table(con, redis_client, SPEC)
    redis_client.hset("user:u1", "recent_five_purchases.purchase_1", "sku-1")
    con.execute("DELETE FROM user_profiles WHERE user_id IN ('u1', 'u2')")
    con.execute("DELETE FROM user_profiles WHERE user_id LIKE 'u1_'")
    con.execute("UPDATE user_profiles SET email = 'changed' WHERE user_id = 'u50'")
    before = redis_hashes(redis_client)
    with pytest.raises(SyncError, match=r"12 of 100 .* > max_delete_fraction 10%.*force=True"):
        sync_table(con, redis_client, SPEC, mode="mirror", max_delete_fraction=0.1)
    assert redis_hashes(redis_client) == before
    assert con.execute("SELECT count(*) FROM sync.snapshot_user_profiles").fetchone()[0] == 100

    dry = sync_table(con, redis_client, SPEC, mode="mirror", max_delete_fraction=0.1, dry_run=True)
    assert dry.removed == 12 and dry.warnings
    result = sync_table(con, redis_client, SPEC, mode="mirror", max_delete_fraction=0.1, force=True)
    assert (result.removed, result.changed) == (12, 1)
    # Mirror removes the fields this sync owns, never a key others write to.
    assert redis_client.hgetall("user:u1") == {"recent_five_purchases.purchase_1": "sku-1"}
    assert not redis_client.exists("user:u2")
    assert redis_hashes(redis_client) == {
        **expected_hashes(con),
        "user:u1": {"recent_five_purchases.purchase_1": "sku-1"},
    }
    assert con.execute("SELECT count(*) FROM sync.snapshot_user_profiles").fetchone()[0] == 88


def test_upsert_never_deletes(con, redis_client):
    load(con, 10)
    sync_table(con, redis_client, SPEC)
    con.execute("DELETE FROM user_profiles")
    result = sync_table(con, redis_client, SPEC)
    assert result.removed == 0 and len(redis_hashes(redis_client)) == 10


def test_rejected_rows_are_recorded_and_retried_once_they_change(con, redis_client):
    load(con, 10)
    con.execute(
        "INSERT INTO user_profiles VALUES ('  ', 'blank@x', 'gold', NULL, 1, true),"
        " ('u3', 'dup@x', 'gold', NULL, 1, true), ('empty', NULL, NULL, NULL, NULL, NULL)"
    )
    redis_client.set("user:u7", "a string, not a hash")
    result = sync_table(con, redis_client, SPEC)
    rejected = con.execute(
        "SELECT key_value, redis_key, reason, kind, run_id FROM sync.rejected_rows"
        " ORDER BY reason, key_value"
    ).fetchall()
    assert [(r[0], r[2], r[3]) for r in rejected] == [
        ("  ", "Blank userId passed in identify event", "invalid"),
        ("u3", "Duplicate key: 2 rows share it", "invalid"),
        ("u3", "Duplicate key: 2 rows share it", "invalid"),
        (
            None,
            "Redis refused the write: WRONGTYPE Operation against a key holding the wrong"
            " kind of value",
            "write",
        ),
        ("empty", "context or context.traits or traits is empty", "invalid"),
    ]
    assert {r[4] for r in rejected} == {result.run_id}
    assert result.rejected == 5
    assert result.rows_written == 8  # u0-u9 minus the duplicate u3 and the refused u7
    assert redis_hashes(redis_client).keys() == {f"user:u{i}" for i in range(10)} - {
        "user:u3",
        "user:u7",
    }

    # Unchanged, the refused row is not sent again; changed, it is.
    again = sync_table(con, redis_client, SPEC)
    assert (again.rows_written, again.rejected) == (0, 5)
    redis_client.delete("user:u7")
    con.execute("UPDATE user_profiles SET email = 'fixed' WHERE user_id = 'u7'")
    con.execute("DELETE FROM user_profiles WHERE email = 'dup@x' OR user_id IN ('  ', 'empty')")
    fixed = sync_table(con, redis_client, SPEC)
    assert (fixed.added, fixed.rejected) == (2, 0)
    assert redis_hashes(redis_client) == expected_hashes(con)
    assert con.execute("SELECT count(*) FROM sync.rejected_rows").fetchone()[0] == 0


@pytest.mark.parametrize(
    "table, columns",
    [
        (
            "sync.rejected_rows",
            "sync_name VARCHAR CHECK (sync_name <> 'user_profiles'), run_id VARCHAR,"
            " key_value VARCHAR, redis_key VARCHAR, fingerprint UBIGINT, reason VARCHAR,"
            " kind VARCHAR, rejected_at TIMESTAMPTZ",
        ),
        (
            "sync.snapshot_user_profiles",
            "key VARCHAR, fingerprint UBIGINT, fields_mask UBIGINT, spec UBIGINT CHECK (spec = 0)",
        ),
    ],
    ids=["rejected_rows", "snapshot"],
)
def test_a_failed_state_transaction_raises_its_own_error_and_rolls_back(
    con, redis_client, table, columns
):
    """A CHECK constraint makes the state INSERT fail inside a transaction: recording invalid
    rows (rejected_rows) or moving an acknowledged batch into the snapshot."""
    load(con, 10)
    con.execute("INSERT INTO user_profiles VALUES ('  ', 'blank@x', 'gold', NULL, 1, true)")
    con.execute("CREATE SCHEMA sync")
    con.execute(f"CREATE TABLE {table} ({columns})")
    with pytest.raises(duckdb.ConstraintException, match="CHECK constraint failed"):
        sync_table(con, redis_client, SPEC)
    # Rolled back, so the connection still works, e.g. to log the run.
    assert con.execute("SELECT count(*) FROM sync.runs").fetchone() == (0,)


def test_dry_run_writes_nothing(con, redis_client, tmp_path):
    load(con, 20)
    con.execute("INSERT INTO user_profiles VALUES (NULL, 'x', NULL, NULL, NULL, NULL)")
    result = sync_table(con, redis_client, SPEC, dry_run=True, sample_size=2)
    assert (result.added, result.rejected, result.rows_written) == (20, 1, 0)
    assert redis_client.dbsize() == 0
    assert (
        con.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'sync'"
        ).fetchone()[0]
        == 0
    )
    assert result.samples["added"] == [
        {"key": "user:u0", "fields": expected_hashes(con)["user:u0"], "removed_fields": []},
        {"key": "user:u1", "fields": expected_hashes(con)["user:u1"], "removed_fields": []},
    ]
    assert result.samples["rejected"] == [
        {"key_value": None, "reason": "Blank userId passed in identify event"}
    ]
    sync_table(con, redis_client, SPEC)
    con.execute("UPDATE user_profiles SET income_bracket = NULL WHERE user_id = 'u1'")
    before = redis_hashes(redis_client)
    plan = sync_table(con, redis_client, SPEC, dry_run=True, mode="mirror")
    assert plan.samples["changed"][0]["removed_fields"] == ["income_bracket"]
    assert redis_hashes(redis_client) == before


def test_full_mode_rewrites_everything_and_reconciles_nulls(con, redis_client):
    load(con, 30)
    sync_table(con, redis_client, SPEC)
    redis_client.hset("user:u0", mapping={"email": "tampered", "income_bracket": "stale"})
    result = sync_table(con, redis_client, SPEC, mode="full")
    assert (result.rows_written, result.unchanged) == (30, 30)
    assert redis_hashes(redis_client) == expected_hashes(con)


def test_prefix_template_and_database_number(con, redis_server):
    load(con, 5)
    destination = RedisDestination.from_url(redis_server.rsplit("/", 1)[0] + "/3", prefix=" app ")
    client = connect(destination)
    client.flushdb()
    spec = SyncSpec("people", "user_profiles", "user_id", {"email": "mail"})
    sync_table(con, client, spec, prefix=destination.prefix)
    db3 = redis.Redis.from_url(redis_server.rsplit("/", 1)[0] + "/3", decode_responses=True)
    assert db3.hgetall("app:user:u2") == {"mail": "u2@example.com"}
    # A new mapping rewrites every row under it.
    changed = SyncSpec("people", "user_profiles", "user_id", {"email": "mail", "vip": "vip"})
    assert sync_table(con, client, changed, prefix=destination.prefix).changed == 5
    assert db3.hgetall("app:user:u2") == {"mail": "u2@example.com", "vip": "true"}
    db3.flushdb()
    db3.close()


def test_redis_cluster(con, redis_cluster):
    load(con, 3000)
    address = ", ".join(f"127.0.0.1:{port}" for port in redis_cluster)
    client = connect(RedisDestination(address=address, cluster_mode=True))
    result = sync_table(con, client, SPEC, batch_size=700)
    assert result.rows_written == 3000
    con.execute("UPDATE user_profiles SET income_bracket = NULL WHERE user_id LIKE 'u1%'")
    con.execute("DELETE FROM user_profiles WHERE user_id LIKE 'u2_'")
    result = sync_table(con, client, SPEC, mode="mirror")
    assert result.removed == 10
    decoded = connect(RedisDestination(address=address, cluster_mode=True))
    keys = {}
    for port in redis_cluster:
        node = redis.Redis(port=port, decode_responses=True)
        keys.update(redis_hashes(node))
        assert node.dbsize() > 500  # the keys really are spread over the three nodes
        node.close()
    assert keys == expected_hashes(con)
    decoded.close()
    client.close()


@pytest.mark.parametrize("field", ["__proto__", "settings.__proto__.admin"])
def test_a_field_that_is_a_proto_trait_is_refused_at_spec_level(field):
    with pytest.raises(ValueError, match=rf"field '{field}': Object contains forbidden prototype"):
        SyncSpec("profiles", "profiles", "user_id", {"plan": field})


def test_a_row_whose_list_holds_a_proto_key_is_a_rejected_row(con, redis_client):
    """The row is refused with RudderStack's reason; the run goes on with the others."""
    con.execute(
        """CREATE TABLE prefs AS SELECT * FROM (VALUES
            ('u1', [MAP {'__proto__': 1}], ['a']),
            ('u2', [MAP {'theme': 2}], ['{"__proto__": 1}']),
            ('u3', NULL, ['b'])) AS t(user_id, settings, notes)"""
    )
    spec = SyncSpec("prefs", "prefs", "user_id", ["settings", "notes"])
    result = sync_table(con, redis_client, spec)
    assert (result.added, result.rejected) == (2, 1)
    assert con.execute("SELECT key_value, reason FROM sync.rejected_rows").fetchall() == [
        ("u1", "Object contains forbidden prototype property")
    ]
    assert redis_hashes(redis_client) == {
        "user:u2": {"settings": '[{"theme":2}]', "notes": '["{\\"__proto__\\": 1}"]'},
        "user:u3": {"notes": '["b"]'},
    }
    with pytest.raises(IdentifyError, match="forbidden prototype"):
        identify_fields({"settings": [{"__proto__": 1}], "notes": ["a"]})


class ReshardingWriter(ClusterWriter):
    """Runs ``steps[n]`` once batch n's replies are in, before batch n + 1 goes out: a
    resharding at a known point of the run instead of a race."""

    def __init__(self, client, steps) -> None:
        super().__init__(client)
        self.steps = steps
        self.received = 0

    def write(self, batch):
        errors = super().write(batch)
        step = self.steps.get(self.received)
        self.received += 1
        if step is not None:
            step()
        return errors


HOT_SLOT = key_slot(b"hot")


def load_with_hot_slot(con, rows: int) -> None:
    """``rows`` users; every third one's key carries the hash tag {hot}, so a third of every
    batch lands in the one slot the tests migrate."""
    load(con, rows)
    con.execute(
        "UPDATE user_profiles SET user_id = '{hot}' || user_id WHERE user_id[2:]::INT % 3 = 0"
    )


def cluster_hashes(nodes) -> dict[str, dict[str, str]]:
    hashes = {}
    for node in nodes:
        hashes.update(redis_hashes(node.client))
    return hashes


def sync_user_client(ports):
    """A cluster client logged in as the README's ACL user, created on every node."""
    for port in ports:
        with redis.Redis(port=port) as node:
            node.execute_command("ACL", *sync_acl_setuser("sync-secret"))
    address = ",".join(f"127.0.0.1:{port}" for port in ports)
    return connect(
        RedisDestination(
            address=address, cluster_mode=True, username="profile_sync", password="sync-secret"
        )
    )


def test_a_slot_migrated_while_the_sync_writes_to_it(con, redis_cluster):
    """Without redirect handling the first ASK or MOVED reply fails the run."""
    load_with_hot_slot(con, 2000)
    nodes = cluster_nodes(redis_cluster)
    client = sync_user_client(redis_cluster)
    source = owner(nodes, HOT_SLOT)
    target, third = [node for node in nodes if node is not source]
    # Batch 0 lands normally; then the slot is MIGRATING with its keys moved, so batches 1-2
    # are answered with ASK; then it belongs to the target, so batch 3 is answered with MOVED
    # (the writer's slot map is stale) and batch 4 goes straight to the target.
    writer = ReshardingWriter(
        client,
        {
            0: lambda: begin_migration(HOT_SLOT, source, target),
            2: lambda: finish_migration(HOT_SLOT, source, target, nodes),
        },
    )
    result = sync_table(con, writer, SPEC, batch_size=400)
    assert (result.added, result.rows_written) == (2000, 2000)
    assert writer.redirects["ASK"] > 100 and writer.redirects["MOVED"] > 50
    assert cluster_hashes(nodes) == expected_hashes(con)
    assert source.client.cluster("countkeysinslot", HOT_SLOT) == 0
    assert target.client.cluster("countkeysinslot", HOT_SLOT) == 667

    # Rows that are HSET + HDEL (a field became null) and HDEL only (the user left), while
    # the slot moves on to the third node: each command of an ASKed row gets its own ASKING.
    # 530 rows in 14 batches: ASK in batches 1-8, MOVED in batch 9.
    con.execute("UPDATE user_profiles SET membership_status = NULL WHERE user_id LIKE '%5'")
    con.execute("DELETE FROM user_profiles WHERE user_id LIKE '{hot}u1%'")
    writer = ReshardingWriter(
        client,
        {
            0: lambda: begin_migration(HOT_SLOT, target, third),
            8: lambda: finish_migration(HOT_SLOT, target, third, nodes),
        },
    )
    result = sync_table(con, writer, SPEC, mode="mirror", batch_size=40)
    # Changed rows come first in the plan, then removed ones: both meet the migration.
    nulled = con.execute("SELECT count(*) FROM user_profiles WHERE user_id LIKE '%5'").fetchone()
    assert (result.changed, result.removed) == (nulled[0], 369)
    assert result.rows_written == result.changed + result.removed
    assert writer.redirects["ASK"] > 10 and writer.redirects["MOVED"] > 5
    assert cluster_hashes(nodes) == expected_hashes(con)
    client.close()


def test_redirects_that_never_settle_fail_the_run_and_a_rerun_repairs(con, redis_cluster):
    """A slot MIGRATING on its owner while the target is not IMPORTING: the owner answers
    ASK, the target MOVED back, forever. The run must stop with the reason, not loop."""
    load_with_hot_slot(con, 300)
    nodes = cluster_nodes(redis_cluster)
    client = sync_user_client(redis_cluster)
    source = owner(nodes, HOT_SLOT)
    target = next(node for node in nodes if node is not source)
    source.client.execute_command("CLUSTER", "SETSLOT", HOT_SLOT, "MIGRATING", target.id)
    with pytest.raises(SyncError, match=f"still redirected after {REDIRECT_ROUNDS} resends"):
        sync_table(con, client, SPEC)
    assert source.client.cluster("countkeysinslot", HOT_SLOT) == 0
    source.client.execute_command("CLUSTER", "SETSLOT", HOT_SLOT, "STABLE")
    result = sync_table(con, client, SPEC)
    # The failed batch's other 200 rows landed but stay in doubt, so they are resent too.
    assert (result.added, result.rows_written) == (100, 300)
    assert cluster_hashes(nodes) == expected_hashes(con)
    client.close()


def test_duckdb_runs_the_sync_under_its_memory_limit_and_gets_its_own_back(con, redis_client):
    """Past the limit DuckDB spills the plan to disk instead of holding every row in memory."""
    limit = "SELECT current_setting('memory_limit')"
    default = con.execute(limit).fetchone()[0]
    con.execute("INSERT INTO user_profiles (user_id) VALUES ('u1')")
    seen = SyncSpec(
        "limit_seen",
        "SELECT user_id, current_setting('memory_limit') AS memory_limit FROM user_profiles",
        "user_id",
        ["memory_limit"],
    )
    for _ in range(2):
        sync_table(con, redis_client, seen, mode="full", memory_limit="200MB")
        assert redis_client.hget("user:u1", "memory_limit") == "190.7 MiB"
        assert con.execute(limit).fetchone()[0] == default
    con.execute("SET memory_limit = '3GB'")
    for _ in range(2):
        sync_table(con, redis_client, seen, mode="full", memory_limit="200MB")
        assert con.execute(limit).fetchone()[0] == "2.7 GiB"


class ThresholdWatchingWriter(StandaloneWriter):
    """Reads DuckDB's checkpoint threshold (a database-wide setting) while each batch is
    written, through a connection of its own."""

    def __init__(self, client: redis.Redis, con: duckdb.DuckDBPyConnection) -> None:
        super().__init__(client)
        self.watch = con.cursor()
        self.seen: list[str] = []

    def write(self, batch):
        setting = "SELECT current_setting('checkpoint_threshold')"
        self.seen.append(self.watch.execute(setting).fetchone()[0])
        return super().write(batch)


def test_checkpoints_wait_until_every_batch_is_queued_and_the_threshold_comes_back(
    con, redis_client
):
    """Each span's commit grows the WAL; checkpointing the snapshot every 16 MiB took the
    CPU a local Redis needed, so the sync raises the threshold until every batch is queued
    (then checkpoints; here refused, since the writer's cursor holds a transaction)."""
    threshold = "SELECT current_setting('checkpoint_threshold')"
    default = con.execute(threshold).fetchone()[0]
    load(con, 100)
    writer = ThresholdWatchingWriter(redis_client, con)
    # The threshold comes back once the last batch (19) is queued; the sender holds
    # SENDER_DEPTH batches, so by then it has taken batches 0 to 19 - SENDER_DEPTH and read
    # the setting for all but the last of those (for the others it may read either).
    sync_table(con, writer, SPEC, mode="full", batch_size=5)
    assert len(writer.seen) == 20
    read_before = 19 - SENDER_DEPTH
    assert writer.seen[:read_before] == ["953.6 MiB"] * read_before
    assert con.execute(threshold).fetchone()[0] == default
    con.execute("SET checkpoint_threshold = '64MB'")
    sync_table(con, ThresholdWatchingWriter(redis_client, con), SPEC, mode="full")
    assert con.execute(threshold).fetchone()[0] == "61.0 MiB"
    assert redis_client.hgetall("user:u49") == expected_hashes(con)["user:u49"]


class WalWatchingWriter(StandaloneWriter):
    """Reads the size of the warehouse's WAL as each batch is written (not through DuckDB:
    a connection reading it would hold a transaction open, and that holds checkpoints off)."""

    def __init__(self, client: redis.Redis, wal: Path) -> None:
        super().__init__(client)
        self.wal = wal
        self.sizes: list[int] = []

    def write(self, batch):
        self.sizes.append(self.wal.stat().st_size if self.wal.exists() else 0)
        return super().write(batch)

    @property
    def checkpoints_seen(self) -> int:
        return sum(after < before for before, after in pairwise(self.sizes))


def test_a_long_run_checkpoints_every_checkpoint_rows_while_redis_writes(
    con, redis_client, tmp_path, monkeypatch
):
    """One checkpoint of ten million rows' state outlasted the batches the sender holds, and
    Redis waited; so a run checkpoints every CHECKPOINT_ROWS rows, each time right after a
    span is queued, and only then at the end."""
    load(con, 400)
    wal = tmp_path / "warehouse.duckdb.wal"
    short_run = WalWatchingWriter(redis_client, wal)
    sync_table(con, short_run, SPEC, batch_size=10)
    assert short_run.checkpoints_seen == 0
    # Spans end at rows 10, 30, 70, 110, 150, ...: checkpoints after rows 110, 230 and 350.
    monkeypatch.setattr(engine, "CHECKPOINT_ROWS", 100)
    long_run = WalWatchingWriter(redis_client, wal)
    sync_table(con, long_run, SPEC, mode="full", batch_size=10)
    assert long_run.checkpoints_seen == 3
    assert redis_hashes(redis_client) == expected_hashes(con)


def test_rows_refused_in_many_chunks_on_all_connections_are_each_found(con, redis_client):
    """A batch goes out in chunks over several connections at once; a refused row in any
    chunk of any connection is recorded under its own key and every other row lands."""
    load(con, 20 * CHUNK_ROWS)
    refused = {f"user:u{i}" for i in range(7, 20 * CHUNK_ROWS, 997)}
    for key in refused:
        redis_client.set(key, "a string, not a hash")
    writer = StandaloneWriter(redis_client, connections=3)
    result = sync_table(con, writer, SPEC, batch_size=10 * CHUNK_ROWS)
    recorded = con.execute(
        "SELECT redis_key FROM sync.rejected_rows WHERE kind = 'write'"
    ).fetchall()
    assert {key for (key,) in recorded} == refused
    assert result.rows_written == 20 * CHUNK_ROWS - len(refused)
    expected = {k: v for k, v in expected_hashes(con).items() if k not in refused}
    assert redis_hashes(redis_client) == expected
    assert not redis_client.connection_pool._in_use_connections  # all given back to the pool


def test_a_failed_reply_finds_its_row_by_the_key_its_command_names(redis_client):
    """Standalone batches join rows in any order, so replies map to rows through the keys
    in the payload; a row's HSET and HDEL are one row, and a key may hold CR LF."""
    odd = "user:a\r\nb"
    payload = (
        b"*4\r\n$4\r\nHSET\r\n$6\r\nuser:1\r\n$1\r\na\r\n$1\r\n1\r\n"
        b"*3\r\n$4\r\nHDEL\r\n$6\r\nuser:1\r\n$1\r\nb\r\n"
        + f"*4\r\n$4\r\nHSET\r\n${len(odd)}\r\n{odd}\r\n$1\r\na\r\n$1\r\n2\r\n".encode()
        + b"*4\r\n$4\r\nHSET\r\n$6\r\nuser:3\r\n$1\r\na\r\n$1\r\n3\r\n"
    )
    redis_client.set(odd, "a string, not a hash")
    writer = StandaloneWriter(redis_client)
    errors = writer.write(Batch(commands=4, chunks=[Chunk(payload, 4)]))
    writer.close()
    assert [key for key, _ in errors] == [odd]
    assert errors[0][1].startswith("WRONGTYPE")
    assert redis_client.hgetall("user:3") == {"a": "3"}
