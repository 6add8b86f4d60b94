"""The demo's checkouts go through the gateway's intake path and give the example users the
purchases personalize() starts from."""

from __future__ import annotations

from personalization_pipeline.demo_checkouts import check_out, describe, latest_orders
from personalization_pipeline.events.effects import PURCHASE_FIELD
from personalization_pipeline.keys import event_stream_keys, user_key
from personalization_pipeline.serving.personalize import personalize
from personalization_pipeline.settings import current
from tests.conftest import SAMPLE_DIR

USERS = ["U000001", "U000002"]


def test_latest_orders_are_read_from_the_order_file():
    orders = latest_orders(SAMPLE_DIR / "orders.csv", USERS)
    # Worked out from data/sample/orders.csv: O000002 (2024-10-17) is U000001's newest order,
    # O000003 (2024-09-08, four lines) U000002's.
    assert orders["U000001"] == {"order_id": "O000002", "ordered_at": "2024-10-17T11:16:00Z",
                                 "skus": ["SKU-64"]}  # fmt: skip
    assert orders["U000002"]["skus"] == ["SKU-1", "SKU-16", "SKU-11", "SKU-99"]


def test_checkouts_land_as_the_gateway_stores_them(redis_url, redis_client, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("EVENTS_WRITE_KEYS", raising=False)
    current.cache_clear()
    orders = latest_orders(SAMPLE_DIR / "orders.csv", USERS)
    check_out(orders)
    check_out(orders)  # the order's messageId: a second demo adds nothing to the profile
    assert redis_client.hget(user_key("U000002"), f"{PURCHASE_FIELD}1") == "SKU-1"
    assert redis_client.hget(user_key("U000002"), f"{PURCHASE_FIELD}5") is None
    assert redis_client.hget(user_key("U000001"), f"{PURCHASE_FIELD}1") == "SKU-64"
    # On the streams for the drain: both checkouts, twice (the drain skips the duplicates).
    streams = event_stream_keys(current().events.stream_shards)
    assert sum(redis_client.xlen(key) for key in streams) == 4
    # No model in this Redis yet, but the purchases are there: not a cold start.
    lines = describe(personalize(redis_client, "U000001"))
    assert lines[0] == "  personalize('U000001'): from recent purchases"
