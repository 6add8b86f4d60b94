"""GET /v1/personalize/{userId} on the serve app: the sample model, real gateway writes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import orjson
import pytest

from personalization_pipeline.events.config import GatewaySettings
from personalization_pipeline.serving.personalize import personalize
from personalization_pipeline.sync.redis_config import RedisDestination
from personalization_pipeline.warehouse.catalog import replace_orders, replace_products
from personalization_pipeline.warehouse.recommendations import ModelSettings, build_recommendations
from tests.conftest import REPO_ROOT, SAMPLE_DIR, free_port
from tests.gateway_server import WRITE_KEY, basic, post, request, running_gateway
from tests.model_in_redis import model_to_redis

READ_KEY = "test-read-key"


def settings_for(url: str) -> GatewaySettings:
    return GatewaySettings(
        write_keys=(WRITE_KEY,),
        read_keys=("other-read-key", READ_KEY),
        destination=RedisDestination.from_url(url),
        socket_timeout=0.5,
    )


@pytest.fixture
def served(redis_url: str, redis_client, tmp_path: Path) -> Iterator[str]:
    """The sample's model in Redis, and the gateway serving it."""
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as connection:
        replace_products(connection, SAMPLE_DIR / "products.csv", 0.2)
        replace_orders(connection, SAMPLE_DIR / "orders.csv", 0.2)
        build_recommendations(connection, REPO_ROOT / "assets" / "sql", ModelSettings())
        model_to_redis(redis_client, connection)
    with running_gateway(settings_for(redis_url)) as url:
        yield url


def read(url: str, path: str, key: str | None = READ_KEY) -> tuple[int, bytes, dict]:
    return request(url, "GET", path, headers={"Authorization": basic(key)} if key else {})


def test_an_expired_member_with_income_after_checkout(served, redis_client):
    # The example user U000002 (expired, level_2) identifies and checks out through the gateway.
    identify = {"userId": "U000002", "traits": {"membership_status": "expired",
                                                "income_bracket": "level_2"}}  # fmt: skip
    assert post(served, "/v1/identify", orjson.dumps(identify))[0] == 200
    order = {"userId": "U000002", "event": "Order Completed",
             "properties": {"products": [{"sku": "SKU-1"}, {"sku": "SKU-41"}]}}  # fmt: skip
    assert post(served, "/v1/track", orjson.dumps(order))[0] == 200
    status, body, headers = read(served, "/v1/personalize/U000002?limit=5")
    assert (status, headers["content-type"]) == (200, "application/json")
    answer = orjson.loads(body)
    assert (answer["userId"], answer["knownUser"], answer["coldStart"]) == ("U000002", True, False)
    assert len(answer["recommendations"]) == 5
    skus = {r["sku"] for r in answer["recommendations"]}
    assert not skus & {"SKU-1", "SKU-41"}  # bought
    assert not any(r["memberOnly"] for r in answer["recommendations"])  # expired: hidden
    first = answer["recommendations"][0]
    assert first["source"] == "similar" and first["reasons"][0].startswith("similar to SKU-")
    # The same answer as personalize() in process.
    assert body == personalize(redis_client, "U000002", limit=5).to_json()


def test_an_unknown_user_gets_the_flagged_cold_start_answer(served):
    status, body, _ = read(served, "/v1/personalize/U999999")
    answer = orjson.loads(body)
    assert status == 200 and (answer["knownUser"], answer["coldStart"]) == (False, True)
    assert len(answer["recommendations"]) == 10
    assert {r["source"] for r in answer["recommendations"]} == {"popular"}
    assert answer["recommendations"][0]["reasons"][0].startswith("popular overall (#1, ")


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (None, b"failed to read read key from header\n"),
        ("wrong", b"invalid read key\n"),
        (WRITE_KEY, b"invalid read key\n"),  # a write key does not read
    ],
)
def test_reads_need_a_read_key(served, key, message):
    status, body, headers = read(served, "/v1/personalize/U000001", key)
    assert (status, body, headers["content-type"]) == (401, message, "text/plain; charset=utf-8")


@pytest.mark.parametrize("limit", ["0", "101", "ten", "-1", "%C2%B2"])  # the last: "²"
def test_a_bad_limit_is_refused(served, limit):
    status, body, _ = read(served, f"/v1/personalize/U000001?limit={limit}")
    assert (status, body) == (400, b"limit must be an integer from 1 to 100\n")


def test_a_blank_user_id_is_refused(served):
    assert read(served, "/v1/personalize/%20")[:2] == (400, b"userId is blank\n")


def test_unreachable_redis_answers_503():
    with running_gateway(settings_for(f"redis://127.0.0.1:{free_port()}/0")) as url:
        status, body, _ = read(url, "/v1/personalize/U000001")
    assert (status, body) == (503, b"profile store unavailable, retry later\n")
