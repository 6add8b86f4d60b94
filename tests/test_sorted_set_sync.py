"""The sorted-set sync on a real redis-server and DuckDB in tmp_path: lists replaced whole,
nothing written when nothing changed, vanished lists deleted, a flushed Redis rewritten."""

from __future__ import annotations

from collections import Counter

import duckdb
import pytest
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from personalization_pipeline.keys import popular_key, product_member
from personalization_pipeline.sync.engine import RemovalRefused
from personalization_pipeline.sync.redis_config import RedisUnavailable
from personalization_pipeline.sync.sorted_sets import SortedSetSpec, read_lists, sync_sorted_sets
from tests.redis_fixtures import begin_migration, cluster_nodes, finish_migration, owner

SPEC = SortedSetSpec(
    name="toy_lists",
    source="lists",
    list_column="category",
    member_columns=["sku", "category", "band", "member_only"],
    score_column="buyers",
    key=popular_key,
    member=product_member,
)
WRITES = ("zadd", "del", "set", "multi", "exec", "hset", "zrem")


@pytest.fixture
def warehouse(tmp_path):
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    connection.execute(
        "CREATE TABLE lists (category VARCHAR, sku VARCHAR, band INT, member_only BOOLEAN, "
        "buyers INT)"
    )
    # category NULL is the overall list: popular_key(None) is "popular".
    put(connection, [(None, "A", 3), (None, "B", 2), ("books", "B", 2), ("books", "C", 1)])
    yield connection
    connection.close()


def put(connection, rows: list[tuple]) -> None:
    connection.execute("DELETE FROM lists")
    if not rows:
        return
    connection.executemany(
        "INSERT INTO lists VALUES (?, ?, 1, false, ?)",
        [(category, sku, buyers) for category, sku, buyers in rows],
    )


def stored(client, key: str) -> list[tuple[str, float]]:
    return [(m.decode() if isinstance(m, bytes) else m, s)
            for m, s in client.zrange(key, 0, -1, desc=True, withscores=True)]  # fmt: skip


def member(sku: str, category: str | None) -> str:
    return product_member(sku, category, 1, False)


def write_commands(client) -> dict[str, int]:
    stats = client.info("commandstats")
    return {
        name: stats[f"cmdstat_{name}"]["calls"] for name in WRITES if f"cmdstat_{name}" in stats
    }


def test_first_run_writes_every_list(warehouse, redis_client):
    result = sync_sorted_sets(warehouse, redis_client, SPEC)
    assert (result.added, result.changed, result.removed, result.unchanged) == (2, 0, 0, 0)
    assert stored(redis_client, "popular") == [(member("A", None), 3.0), (member("B", None), 2.0)]
    assert stored(redis_client, "popular:books") == [
        (member("B", "books"), 2.0),
        (member("C", "books"), 1.0),
    ]


def test_an_unchanged_rerun_writes_nothing(warehouse, redis_client):
    sync_sorted_sets(warehouse, redis_client, SPEC)
    redis_client.config_resetstat()
    result = sync_sorted_sets(warehouse, redis_client, SPEC)
    assert (result.added, result.changed, result.removed, result.unchanged) == (0, 0, 0, 2)
    assert result.rows_written == 0
    assert write_commands(redis_client) == {}


def test_a_changed_list_is_replaced_whole_and_a_vanished_one_deleted(warehouse, redis_client):
    sync_sorted_sets(warehouse, redis_client, SPEC)
    # Overall: A leaves, D arrives, B's score changes. Books: gone from the model.
    put(warehouse, [(None, "B", 5), (None, "D", 1), ("garden", "E", 4)])
    redis_client.config_resetstat()
    # One of the two lists goes: half of them, allowed here (the delete guard is tested below).
    result = sync_sorted_sets(warehouse, redis_client, SPEC, max_delete_fraction=0.5)
    assert (result.added, result.changed, result.removed, result.unchanged) == (1, 1, 1, 0)
    assert stored(redis_client, "popular") == [(member("B", None), 5.0), (member("D", None), 1.0)]
    assert stored(redis_client, "popular:garden") == [(member("E", "garden"), 4.0)]
    assert not redis_client.exists("popular:books")
    # One transaction per written list: MULTI, DEL, ZADD, EXEC; one DEL for the vanished one.
    assert write_commands(redis_client) == {"multi": 3, "exec": 3, "zadd": 2, "del": 3}


def test_a_flushed_redis_is_rewritten(warehouse, redis_client):
    sync_sorted_sets(warehouse, redis_client, SPEC)
    redis_client.flushall()
    result = sync_sorted_sets(warehouse, redis_client, SPEC)
    assert "Redis lost its data" in result.full_sync_reason
    assert result.rows_written == 2
    assert stored(redis_client, "popular:books") == [
        (member("B", "books"), 2.0),
        (member("C", "books"), 1.0),
    ]
    # The marker is back, so the run after is incremental again.
    assert sync_sorted_sets(warehouse, redis_client, SPEC).rows_written == 0


def sync_that_dies_before_its_first_write(warehouse, client, monkeypatch) -> None:
    from personalization_pipeline.sync import sorted_sets

    def refuse(*_args):
        raise ConnectionError("Redis went away")

    with monkeypatch.context() as patched:
        patched.setattr(sorted_sets, "_send_to_node", refuse)
        with pytest.raises(sorted_sets.RedisUnavailable, match="Redis went away"):
            sync_sorted_sets(warehouse, client, SPEC)


def test_a_run_that_died_mid_batch_is_repaired(warehouse, redis_client, monkeypatch):
    sync_sorted_sets(warehouse, redis_client, SPEC)
    put(warehouse, [(None, "A", 9), ("books", "C", 7)])
    sync_that_dies_before_its_first_write(warehouse, redis_client, monkeypatch)
    result = sync_sorted_sets(warehouse, redis_client, SPEC)
    assert result.rows_written == 2
    assert stored(redis_client, "popular") == [(member("A", None), 9.0)]


def test_a_rewrite_of_a_flushed_redis_that_dies_is_finished_by_the_rerun(
    warehouse, redis_client, monkeypatch
):
    sync_sorted_sets(warehouse, redis_client, SPEC)
    redis_client.flushall()
    sync_that_dies_before_its_first_write(warehouse, redis_client, monkeypatch)
    # Redis has the dead run's new epoch, the warehouse does not: every list is written again.
    result = sync_sorted_sets(warehouse, redis_client, SPEC)
    assert "did not finish" in result.full_sync_reason
    assert result.rows_written == 2
    assert stored(redis_client, "popular") == [(member("A", None), 3.0), (member("B", None), 2.0)]


def test_on_redis_cluster_one_key_per_transaction(warehouse, redis_cluster):
    cluster = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", redis_cluster[0])])
    try:
        spec = SortedSetSpec(**{**SPEC.__dict__, "name": "toy_cluster"})
        rows = [(f"c{n}", f"S{n}", n) for n in range(30)]
        put(warehouse, rows)
        assert sync_sorted_sets(warehouse, cluster, spec, prefix="shop").rows_written == 30
        put(warehouse, [*rows[1:], ("c5", "X", 99)])
        result = sync_sorted_sets(warehouse, cluster, spec, prefix="shop")
        assert (result.changed, result.removed, result.unchanged) == (1, 1, 28)
        assert stored(cluster, "shop:popular:c5") == [
            (member("X", "c5"), 99.0),
            (member("S5", "c5"), 5.0),
        ]
        assert not cluster.exists("shop:popular:c0")
    finally:
        cluster.close()


def ten_lists(warehouse, kept: int = 10) -> None:
    put(warehouse, [(f"c{n}", f"S{n}", n) for n in range(kept)])


def test_a_model_that_would_delete_too_many_lists_is_refused_before_any_write(
    warehouse, redis_client
):
    ten_lists(warehouse)
    sync_sorted_sets(warehouse, redis_client, SPEC)
    put(warehouse, [(f"c{n}", f"S{n}", n + 1) for n in range(7)])  # 3 gone, the rest changed
    redis_client.config_resetstat()
    with pytest.raises(RemovalRefused, match=r"would delete 3 of 10 lists .*30\.0% > .*force"):
        sync_sorted_sets(warehouse, redis_client, SPEC)
    assert write_commands(redis_client) == {}, "refused before writing anything"
    assert stored(redis_client, "popular:c0") == [(member("S0", "c0"), 0.0)]
    assert warehouse.execute(
        "SELECT status FROM sync.runs ORDER BY finished_at DESC LIMIT 1"
    ).fetchone() == ("refused",)
    # An empty model is refused too: it would delete every list.
    put(warehouse, [])
    with pytest.raises(RemovalRefused, match="would delete 10 of 10 lists"):
        sync_sorted_sets(warehouse, redis_client, SPEC)
    assert redis_client.exists(*[f"popular:c{n}" for n in range(10)]) == 10

    ten_lists(warehouse, kept=8)  # 20% is not more than max_delete_fraction: allowed
    assert sync_sorted_sets(warehouse, redis_client, SPEC).removed == 2
    put(warehouse, [("c0", "S0", 0)])
    result = sync_sorted_sets(warehouse, redis_client, SPEC, force=True)
    assert (result.removed, result.unchanged) == (7, 1)
    assert redis_client.keys("popular*") == ["popular:c0"]


def test_a_dry_run_plans_and_samples_without_writing_anywhere(warehouse, redis_client):
    def state_tables():
        return warehouse.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'sync' "
            "ORDER BY 1"
        ).fetchall()

    first = sync_sorted_sets(warehouse, redis_client, SPEC, dry_run=True)
    assert (first.dry_run, first.added, first.rows_written) == (True, 2, 0)
    assert state_tables() == [], "a dry run creates no state in the warehouse"
    assert redis_client.dbsize() == 0
    overall = [[member("A", None), 3.0], [member("B", None), 2.0]]
    books = [[member("B", "books"), 2.0], [member("C", "books"), 1.0]]
    assert first.samples["added"] == [
        {"key": "popular", "members": 2, "best": overall},
        {"key": "popular:books", "members": 2, "best": books},
    ]

    sync_sorted_sets(warehouse, redis_client, SPEC)
    tables = state_tables()
    runs = warehouse.execute("SELECT count(*) FROM sync.runs").fetchone()
    # Overall changes, books goes, garden and toys arrive, and half the lists going warns only.
    put(warehouse, [(None, "A", 1), ("garden", "E", 4), ("toys", "F", 2)])
    redis_client.config_resetstat()
    plan = sync_sorted_sets(warehouse, redis_client, SPEC, dry_run=True, sample_size=1)
    assert (plan.added, plan.changed, plan.unchanged, plan.removed) == (2, 1, 0, 1)
    assert [row["key"] for row in plan.samples["added"]] == ["popular:garden"]
    assert plan.samples["changed"] == [
        {"key": "popular", "members": 1, "best": [[member("A", None), 1.0]]}
    ]
    assert plan.samples["removed"] == [{"key": "popular:books"}]
    assert plan.warnings and "would delete 1 of 2 lists" in plan.warnings[0]
    assert write_commands(redis_client) == {}
    assert state_tables() == tables
    assert warehouse.execute("SELECT count(*) FROM sync.runs").fetchone() == runs
    # Nothing moved: the real run finds the same plan.
    put(warehouse, [(None, "A", 1), ("books", "B", 2), ("books", "C", 1), ("garden", "E", 4)])
    plan = sync_sorted_sets(warehouse, redis_client, SPEC, dry_run=True)
    assert [row["key"] for row in plan.samples["unchanged"]] == ["popular:books"]
    result = sync_sorted_sets(warehouse, redis_client, SPEC)
    assert (result.added, result.changed, result.unchanged) == (1, 1, 1)


HOT_SLOT = key_slot(b"hot")


def cluster_lists(nodes) -> dict[str, list[tuple[str, float]]]:
    """Every sorted set the masters hold, read from each node directly."""
    lists = {}
    for node in nodes:
        for key in node.client.scan_iter("popular*", count=1000):
            lists[key] = stored(node.client, key)
    return lists


def warehouse_lists(warehouse) -> dict[str, list[tuple[str, float]]]:
    values = [
        value for (value,) in warehouse.execute("SELECT DISTINCT category FROM lists").fetchall()
    ]
    return {
        popular_key(value): [(m, s) for m, s in members]
        for value, members in read_lists(warehouse, SPEC, values).items()
    }


@pytest.fixture
def resharding(monkeypatch):
    """``steps(batch → action)``: run an action (a migration step) before that batch of lists
    is sent; returns the MOVED and ASK replies the sync followed, counted by kind."""
    from personalization_pipeline.sync import sorted_sets

    monkeypatch.setattr(sorted_sets, "BATCH_LISTS", 6)
    send, send_to_node = sorted_sets._send, sorted_sets._send_to_node
    redirects: Counter[str] = Counter()

    def install(steps: dict):
        batches = iter(range(10**6))
        redirects.clear()

        def stepping_send(client, transactions):
            step = steps.get(next(batches))
            if step is not None:
                step()
            send(client, transactions)

        def counting_send_to_node(client, transactions):
            redirected = send_to_node(client, transactions)
            redirects.update(type(redirect).__name__ for _, _, redirect in redirected)
            return redirected

        monkeypatch.setattr(sorted_sets, "_send", stepping_send)
        monkeypatch.setattr(sorted_sets, "_send_to_node", counting_send_to_node)
        return redirects

    return install


def test_lists_written_while_their_slot_migrates(warehouse, redis_cluster, resharding):
    """A third of the lists share the slot of {hot}; it moves twice while the sync writes."""
    nodes = cluster_nodes(redis_cluster)
    source = owner(nodes, HOT_SLOT)
    target, third = [node for node in nodes if node is not source]
    cluster = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", redis_cluster[0])])
    rows = [("{hot}" * (n % 3 == 0) + f"c{n}", f"S{n}", n) for n in range(60)]
    put(warehouse, rows)
    try:
        # 10 batches of 6 lists. Batches 2-5 meet the slot MIGRATING with its keys moved (ASK),
        # batch 6 a slot that changed hands behind the client's slot map (MOVED).
        redirects = resharding(
            {
                2: lambda: begin_migration(HOT_SLOT, source, target),
                6: lambda: finish_migration(HOT_SLOT, source, target, nodes),
            }
        )
        assert sync_sorted_sets(warehouse, cluster, SPEC).rows_written == 60
        assert redirects["AskError"] > 0 and redirects["MovedError"] > 0, redirects
        assert cluster_lists(nodes) == warehouse_lists(warehouse)
        assert target.client.cluster("countkeysinslot", HOT_SLOT) == 20

        # Nine lists go (DEL only; the three hot ones sort last, into batch 1, and meet ASK)
        # and the other 51 change, while the slot moves on to the third node.
        put(warehouse, [(c, sku, n + 1) for c, sku, n in rows[9:]])
        redirects = resharding(
            {
                0: lambda: begin_migration(HOT_SLOT, target, third),
                4: lambda: finish_migration(HOT_SLOT, target, third, nodes),
            }
        )
        result = sync_sorted_sets(warehouse, cluster, SPEC)
        assert (result.removed, result.changed) == (9, 51)
        assert redirects["AskError"] > 0 and redirects["MovedError"] > 0, redirects
        assert cluster_lists(nodes) == warehouse_lists(warehouse)
        assert third.client.cluster("countkeysinslot", HOT_SLOT) == 17
    finally:
        cluster.close()


def test_redirects_that_never_settle_fail_the_run_and_a_rerun_repairs(warehouse, redis_cluster):
    """The slot MIGRATING on its owner while the target is not IMPORTING: ASK there, MOVED
    back, forever. The run must stop with the reason, not loop."""
    nodes = cluster_nodes(redis_cluster)
    source = owner(nodes, HOT_SLOT)
    target = next(node for node in nodes if node is not source)
    put(warehouse, [("{hot}" * (n % 2) + f"c{n}", f"S{n}", n) for n in range(10)])
    cluster = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", redis_cluster[0])])
    try:
        source.client.execute_command("CLUSTER", "SETSLOT", HOT_SLOT, "MIGRATING", target.id)
        with pytest.raises(RedisUnavailable, match="still redirected after 5 resends"):
            sync_sorted_sets(warehouse, cluster, SPEC)
        source.client.execute_command("CLUSTER", "SETSLOT", HOT_SLOT, "STABLE")
        assert sync_sorted_sets(warehouse, cluster, SPEC).rows_written == 10
        assert cluster_lists(nodes) == warehouse_lists(warehouse)
    finally:
        cluster.close()
