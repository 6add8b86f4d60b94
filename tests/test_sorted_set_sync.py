"""The sorted-set sync on a real redis-server and DuckDB in tmp_path: lists replaced whole,
nothing written when nothing changed, vanished lists deleted, a flushed Redis rewritten."""

from __future__ import annotations

import duckdb
import pytest
from redis.cluster import ClusterNode, RedisCluster

from personalization_pipeline.keys import popular_key, product_member
from personalization_pipeline.sync.sorted_sets import SortedSetSpec, sync_sorted_sets

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
    result = sync_sorted_sets(warehouse, redis_client, SPEC)
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


def test_a_run_that_died_mid_batch_is_repaired(warehouse, redis_client, monkeypatch):
    from personalization_pipeline.sync import sorted_sets

    sync_sorted_sets(warehouse, redis_client, SPEC)
    put(warehouse, [(None, "A", 9), ("books", "C", 7)])

    def refuse(*_args):
        raise ConnectionError("Redis went away")

    monkeypatch.setattr(sorted_sets, "_send_to_node", refuse)
    with pytest.raises(sorted_sets.RedisUnavailable, match="Redis went away"):
        sync_sorted_sets(warehouse, redis_client, SPEC)
    monkeypatch.undo()
    result = sync_sorted_sets(warehouse, redis_client, SPEC)
    assert result.rows_written == 2
    assert stored(redis_client, "popular") == [(member("A", None), 9.0)]


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
