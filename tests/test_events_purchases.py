"""Purchases through the gateway's Redis effects: any order, any duplicates, one final state.

Drives intake + EventEffects against the real redis-server (no HTTP: the HTTP layer adds
nothing to ordering), on a single Redis and on a one-node Redis Cluster (which enforces the
same-slot rule for scripts).
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import orjson
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from personalization_pipeline.events.connection import async_client
from personalization_pipeline.events.effects import PURCHASE_LOG_SIZE, EventEffects
from personalization_pipeline.events.intake import accept_events
from personalization_pipeline.events.streams import EventStreams
from personalization_pipeline.keys import purchases_key
from personalization_pipeline.sync.redis_config import RedisDestination

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def deliver_bodies(url: str, bodies: list[bytes], cluster: bool = False) -> None:
    """Each body as one /v1/batch request, through intake and the effects."""

    async def run() -> None:
        destination = RedisDestination.from_url(url, cluster_mode=cluster)
        client = async_client(destination)
        effects = EventEffects(client, streams=EventStreams(shards=3), cluster=cluster)
        for body in bodies:
            await effects.apply(effects.plan(accept_events(body, None, NOW, "127.0.0.1")))
        await client.aclose()

    asyncio.run(run())


def deliver(url: str, requests: list[list[dict]], cluster: bool = False) -> None:
    deliver_bodies(url, [orjson.dumps({"batch": events}) for events in requests], cluster)


def profile_state(client: redis.Redis, users: list[str]) -> dict:
    return {
        user: (client.hgetall(f"user:{user}"), client.get(purchases_key(f"user:{user}")))
        for user in users
    }


purchase = st.tuples(
    st.sampled_from(["u1", "u2"]),
    st.integers(0, 20),  # few distinct seconds: many timestamp ties, broken by messageId
    st.lists(st.sampled_from("ABCDEFG"), min_size=1, max_size=3),
)


@settings(max_examples=40)
@given(
    purchases=st.lists(purchase, min_size=1, max_size=PURCHASE_LOG_SIZE + 15),
    seed=st.integers(0, 2**32),
)
def test_duplicated_and_shuffled_deliveries_end_in_the_ordered_state(
    redis_server: str, purchases: list, seed: int
) -> None:
    events = [
        {
            "type": "track",
            "event": "Order Completed",
            "userId": user,
            "messageId": f"m{n}",
            "timestamp": f"2024-05-01T10:00:{second:02d}Z",
            "properties": {"products": [{"sku": sku} for sku in skus]},
        }
        for n, (user, second, skus) in enumerate(purchases)
    ]
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    client.flushall()
    ordered = sorted(events, key=lambda e: (e["timestamp"], e["messageId"]))
    deliver(redis_server, [ordered])
    expected = profile_state(client, ["u1", "u2"])

    rng = random.Random(seed)
    resent = events + rng.choices(events, k=len(events))  # SDK retries of any of them
    rng.shuffle(resent)
    requests, at = [], 0
    while at < len(resent):
        size = rng.randint(1, 10)
        requests.append(resent[at : at + size])
        at += size
    client.flushall()
    deliver(redis_server, requests)
    assert profile_state(client, ["u1", "u2"]) == expected

    # And what shows is the newest five SKUs of the newest purchases.
    for user in ("u1", "u2"):
        mine = [e for e in reversed(ordered) if e["userId"] == user]
        skus = [p["sku"] for e in mine for p in e["properties"]["products"]][:5]
        shown = expected[user][0]
        assert [shown.get(f"recent_five_purchases.purchase_{k}") for k in range(1, 6)] == (
            skus + [None] * (5 - len(skus))
        )
    client.close()


@pytest.fixture
def cluster_url(redis_cluster: list[int]) -> str:
    """A seed node of the session's three-master Redis Cluster, emptied."""
    return f"redis://127.0.0.1:{redis_cluster[0]}/0"


def test_on_redis_cluster_each_profile_is_one_same_slot_script(cluster_url: str) -> None:
    users = [f"user{n}" for n in range(30)]
    events = [
        {"type": "identify", "userId": user, "messageId": f"i-{user}", "traits": {"n": -0.0}}
        for user in users
    ] + [
        {
            "type": "track",
            "event": "Order Completed",
            "userId": user,
            "messageId": f"p-{user}",
            "properties": {"sku": f"SKU-{user}"},
        }
        for user in users
    ]
    deliver(cluster_url, [events], cluster=True)
    client = redis.RedisCluster.from_url(cluster_url, decode_responses=True)
    for user in users:
        assert client.hgetall(f"user:{user}") == {
            "n": "-0",
            "recent_five_purchases.purchase_1": f"SKU-{user}",
        }
    client.close()


def test_minus_zero_in_the_body_is_kept_for_the_identify_encoding(redis_url: str) -> None:
    body = b'{"batch":[{"type":"identify","userId":"u","traits":{"a":-0,"b":1.0,"c":-0.5}}]}'
    deliver_bodies(redis_url, [body])
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.hgetall("user:u") == {"a": "-0", "b": "1", "c": "-0.5"}
    client.close()
