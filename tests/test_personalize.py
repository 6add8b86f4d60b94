"""personalize() on a hand-made model: every recommendation and score worked out by hand."""

from __future__ import annotations

import logging

import duckdb
import orjson
import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from personalization_pipeline.events.effects import PURCHASE_FIELD
from personalization_pipeline.keys import (
    popular_key,
    product_member,
    purchases_key,
    similar_key,
    user_key,
)
from personalization_pipeline.serving.personalize import personalize
from tests.model_in_redis import model_to_redis

# (sku, category, price band, member_only). M1 is member-only.
CATALOG = {
    "A": ("outdoor", 4, False),
    "B": ("outdoor", 3, False),
    "P1": ("outdoor", 2, False),
    "P2": ("outdoor", 3, False),
    "M1": ("outdoor", 2, True),
    "P3": ("books", 5, False),
    "P4": ("books", 1, False),
    "P5": ("kitchen", 2, False),
}
SIMILAR = {
    "A": {"B": 0.9, "P1": 0.5, "M1": 0.4, "P2": 0.3},
    "B": {"P3": 0.6, "P1": 0.5, "P4": 0.2},
}
POPULAR = {"P5": 100, "P1": 80, "M1": 60, "P4": 50, "A": 40}
POPULAR_BOOKS = {"P3": 30, "P4": 20}


def hand_model() -> duckdb.DuckDBPyConnection:
    """The model's tables in a DuckDB in memory, as assets/sql/ shapes them."""
    connection = duckdb.connect()
    connection.execute("CREATE SCHEMA analytics")

    def table(name: str, columns: str, rows: list[tuple]) -> None:
        connection.execute(f"CREATE TABLE analytics.{name} ({columns})")
        connection.executemany(
            f"INSERT INTO analytics.{name} VALUES ({', '.join('?' * len(rows[0]))})", rows
        )

    attributes = "category VARCHAR, price_band INT, member_only BOOLEAN"
    table(
        "product_similarity",
        f"sku VARCHAR, neighbour_sku VARCHAR, similarity DOUBLE, {attributes}",
        [(a, n, s, *CATALOG[n]) for a, near in SIMILAR.items() for n, s in near.items()],
    )
    table(
        "popular_products",
        f"sku VARCHAR, buyers INT, {attributes}",
        [(sku, buyers, *CATALOG[sku]) for sku, buyers in POPULAR.items()],
    )
    table(
        "popular_products_by_category",
        f"sku VARCHAR, buyers INT, {attributes}",
        [(sku, buyers, *CATALOG[sku]) for sku, buyers in POPULAR_BOOKS.items()],
    )
    table(
        "product_catalog",
        f"sku VARCHAR, name VARCHAR, price DECIMAL(12, 2), {attributes}",
        [(sku, f"Product {sku}", 10, *attributes) for sku, attributes in CATALOG.items()],
    )
    return connection


def add_user(client, user_id: str, traits: dict, recent=(), logged=(), prefix: str = "") -> None:
    """A profile as the profile sync and the gateway leave it: traits, the five newest SKUs
    in the hash, and the purchase log ``[[sortkey, messageId, sku, ...], ...]``."""
    key = user_key(user_id, prefix)
    fields = {**traits, **{f"{PURCHASE_FIELD}{n}": sku for n, sku in enumerate(recent, 1)}}
    if fields:
        client.hset(key, mapping=fields)
    if logged:
        entries = [[f"{n:018d}", f"m{n}", sku] for n, sku in enumerate(logged)]
        client.set(purchases_key(key), orjson.dumps(entries))


@pytest.fixture
def store(redis_client):
    model_to_redis(redis_client, hand_model())
    loyal = {"membership_status": "loyalty_member"}
    add_user(redis_client, "loyal", loyal, recent=["A", "B"], logged=["B", "A", "P4"])
    expired = {"membership_status": "expired", "income_bracket": "level_2"}
    add_user(redis_client, "expired", expired, recent=["A", "B"], logged=["B", "A"])
    newcomer = {"membership_status": "loyalty_member", "income_bracket": "level_4"}
    add_user(redis_client, "newcomer", newcomer)
    return redis_client


def ranked(result) -> list[tuple[str, float, str]]:
    return [(r.sku, r.score, r.source) for r in result.recommendations]


def test_loyalty_member_without_income(store):
    result = personalize(store, "loyal")
    # Recency weights 1.0 (A, newest) and 0.8 (B). B and P4 were bought (hash, log): out.
    # P1 = 1.0*0.5 + 0.8*0.5 = 0.9; M1 = 1.0*0.4 * 1.3 (member-only boost) = 0.52;
    # P3 = 0.8*0.6 = 0.48; P2 = 1.0*0.3 = 0.3; then popular fills: P5 100/100 = 1.0
    # (P1, M1 taken, P4 and A bought).
    assert ranked(result) == [
        ("P1", 0.9, "similar"),
        ("M1", 0.52, "similar"),
        ("P3", 0.48, "similar"),
        ("P2", 0.3, "similar"),
        ("P5", 1.0, "popular"),
    ]
    assert (result.known_user, result.cold_start) == (True, False)
    p1, m1 = result.recommendations[:2]
    assert p1.reasons == (
        "similar to A, your purchase #1 (similarity 0.50 x recency 1.0)",
        "similar to B, your purchase #2 (similarity 0.50 x recency 0.8)",
    )
    assert m1.reasons[-1] == "member-only, boosted for loyalty members (x1.3)"
    assert result.recommendations[-1].reasons == ("popular overall (#1, 100 buyers)",)
    assert ranked(personalize(store, "loyal", limit=3)) == ranked(result)[:3]


def test_expired_member_with_income_sees_no_member_only_and_fitting_prices_first(store):
    result = personalize(store, "expired")
    # level_2: band distance 0 x1.25, 1 x1.0, 2+ x0.8. M1 is hidden (not a loyalty member).
    # P1 0.9 * 1.25 = 1.125; P3 0.48 * 0.8 (band 5) = 0.384; P2 0.3 * 1.0 (band 3) = 0.3;
    # P4 0.8*0.2 = 0.16 * 1.0 (band 1; not bought by this user); popular P5 1.0 * 1.25.
    assert ranked(result) == [
        ("P1", 1.125, "similar"),
        ("P3", 0.384, "similar"),
        ("P2", 0.3, "similar"),
        ("P4", 0.16, "similar"),
        ("P5", 1.25, "popular"),
    ]
    assert result.recommendations[0].reasons[-1] == "price band 2 suits income level_2 (x1.25)"
    assert result.recommendations[1].reasons[-1] == "price band 5 is far from income level_2 (x0.8)"


def test_cold_start_unknown_user_and_member_without_purchases(store):
    unknown = personalize(store, "nobody")
    # Popular by buyers / 100; M1 hidden from a user without a profile.
    assert ranked(unknown) == [
        ("P5", 1.0, "popular"),
        ("P1", 0.8, "popular"),
        ("P4", 0.5, "popular"),
        ("A", 0.4, "popular"),
    ]
    assert (unknown.known_user, unknown.cold_start) == (False, True)
    newcomer = personalize(store, "newcomer")
    # level_4: P5 1.0*0.8 (band 2), P1 0.8*0.8, M1 0.6*1.3*0.8, A 0.4*1.25 (band 4), P4 0.5*0.8.
    assert ranked(newcomer) == [
        ("P5", 0.8, "popular"),
        ("P1", 0.64, "popular"),
        ("M1", 0.624, "popular"),
        ("A", 0.5, "popular"),
        ("P4", 0.4, "popular"),
    ]
    assert (newcomer.known_user, newcomer.cold_start) == (True, True)


def test_a_category_page_keeps_its_category_and_falls_back_to_its_popular_list(store):
    # books: P3 0.48 from the neighbours; popular:books adds nothing (P3 taken, P4 bought).
    assert ranked(personalize(store, "loyal", category="books")) == [("P3", 0.48, "similar")]
    assert ranked(personalize(store, "nobody", category="books")) == [
        ("P3", 1.0, "popular"),
        ("P4", round(20 / 30, 6), "popular"),
    ]


class CountingClient:
    """A real client whose pipelines are counted; any other call fails (AttributeError)."""

    def __init__(self, client) -> None:
        self.client, self.round_trips = client, 0

    def pipeline(self, transaction: bool):
        pipe = self.client.pipeline(transaction=transaction)
        execute = pipe.execute

        def counted():
            self.round_trips += 1
            return execute()

        pipe.execute = counted
        return pipe


def test_two_round_trips_with_purchases_one_without(store):
    counting = CountingClient(store)
    personalize(counting, "loyal")
    assert counting.round_trips == 2
    personalize(counting, "nobody")
    assert counting.round_trips == 3


def test_on_redis_cluster_with_a_prefix(redis_cluster, redis_client):
    cluster = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", redis_cluster[0])])
    try:
        model_to_redis(cluster, hand_model(), prefix="shop")
        traits = {"membership_status": "loyalty_member"}
        add_user(
            cluster, "loyal", traits, recent=["A", "B"], logged=["B", "A", "P4"], prefix="shop"
        )
        # A real cross-slot read: the keys of round 2 live on different slots.
        assert key_slot(similar_key("A", "shop").encode()) != key_slot(
            similar_key("B", "shop").encode()
        )
        result = personalize(cluster, "loyal", prefix="shop")
        model_to_redis(redis_client, hand_model())
        add_user(redis_client, "loyal", traits, recent=["A", "B"], logged=["B", "A", "P4"])
        assert result == personalize(redis_client, "loyal")
        assert [r.sku for r in result.recommendations] == ["P1", "M1", "P3", "P2", "P5"]
    finally:
        cluster.close()


def test_a_blank_user_id_is_refused_and_a_damaged_log_only_warns(store, caplog):
    with pytest.raises(ValueError, match="Blank userId"):
        personalize(store, "  ")
    store.set(purchases_key(user_key("loyal")), "not json")
    with caplog.at_level(logging.WARNING):
        result = personalize(store, "loyal")
    # P4 is no longer known to be bought: the neighbour of B comes back (0.8*0.2 = 0.16).
    assert ("P4", 0.16, "similar") in ranked(result)
    assert "purchase log of user loyal is not the gateway's JSON" in caplog.text


def test_bytes_replies_read_the_same(store, redis_url):
    raw = redis.Redis.from_url(redis_url)
    try:
        assert personalize(raw, "expired") == personalize(store, "expired")
    finally:
        raw.close()


def test_a_changed_product_is_read_anew_and_the_decoded_members_stay_bounded(store, monkeypatch):
    # personalize() keeps decoded members between requests; a catalog change writes new
    # members, which must be read as they are now, and a full store starts again.
    from personalization_pipeline.serving import personalize as serving

    monkeypatch.setattr(serving, "MEMBERS_KEPT", 3)
    assert ranked(personalize(store, "expired"))[0] == ("P1", 1.125, "similar")
    # P1 becomes member-only among the neighbours: hidden there; the popular list, unchanged,
    # still offers it (80 / 100 x1.25 for band 2), after P5.
    for key in (similar_key("A"), similar_key("B")):
        old = product_member("P1", "outdoor", 2, False)
        score = store.zscore(key, old)
        store.zrem(key, old)
        store.zadd(key, {product_member("P1", "outdoor", 2, True): score})
    assert ranked(personalize(store, "expired")) == [
        ("P3", 0.384, "similar"),
        ("P2", 0.3, "similar"),
        ("P4", 0.16, "similar"),
        ("P5", 1.25, "popular"),
        ("P1", 1.0, "popular"),
    ]
    assert len(serving._decoded) <= 3


def test_equal_scores_rank_by_sku_and_the_limit_keeps_the_best(redis_client):
    # Two popular products with the same buyers: the SKU decides, before the limit cuts (Redis
    # lists Z1 first: equal scores come in reverse member order).
    redis_client.zadd(
        popular_key("garden"),
        {
            product_member("Z1", "garden", 3, False): 10,
            product_member("Y1", "garden", 3, False): 10,
            product_member("X1", "garden", 3, False): 5,
        },
    )
    assert ranked(personalize(redis_client, "nobody", limit=2, category="garden")) == [
        ("Y1", 1.0, "popular"),
        ("Z1", 1.0, "popular"),
    ]
    assert ranked(personalize(redis_client, "nobody", limit=1, category="garden")) == [
        ("Y1", 1.0, "popular")
    ]
