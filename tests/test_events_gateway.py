"""The event gateway over real HTTP (uvicorn in a thread) against a real redis-server.

Covers rudder-server's status codes and exact bodies (reference §2.4), auth, gzip, the size
limit, all-or-nothing batches, the effects in Redis, the real rudder-sdk-python client, and
Redis going away (503, and a retry that converges).
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import redis
from rudderstack.analytics.client import Client

from personalization_pipeline.events.config import GatewaySettings
from personalization_pipeline.keys import EVENT_FIELD, event_stream_keys, purchases_key
from personalization_pipeline.sync.identify import encode_identify
from personalization_pipeline.sync.redis_config import RedisDestination
from tests.conftest import REPO_ROOT, free_port, start_redis_server
from tests.gateway_server import WRITE_KEY, basic, post, running_gateway

SHARDS = 4


def settings_for(url: str, **overrides) -> GatewaySettings:
    return GatewaySettings(
        write_keys=("other-key", WRITE_KEY),
        destination=RedisDestination.from_url(url),
        socket_timeout=0.5,
        **overrides,
    )


@pytest.fixture
def gateway(redis_url: str) -> Iterator[str]:
    with running_gateway(settings_for(redis_url)) as url:
        yield url


def stream_events(client: redis.Redis) -> list[dict]:
    events = []
    for key in event_stream_keys(SHARDS):
        for _, entry in client.xrange(key):
            assert set(entry) == {EVENT_FIELD}
            events.append(json.loads(entry[EVENT_FIELD]))
    return events


def track(user: str, message_id: str, timestamp: str, *skus: str) -> dict:
    products = [{"sku": sku, "price": 1.5} for sku in skus]
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": user,
        "messageId": message_id,
        "timestamp": timestamp,
        "properties": {"products": products},
    }


# --- rudder-server's answers ------------------------------------------------------------

ERROR_CASES = [
    # (path, body, headers, auth, status, message)
    ("/v1/track", b'{"userId":"u"}', {}, False, 401, "failed to read writekey from header"),
    ("/v1/track", b'{"userId":"u"}', {"Authorization": "Bearer x"}, False, 401,
     "failed to read writekey from header"),
    ("/v1/track", b'{"userId":"u"}', {"Authorization": basic("")}, False, 401,
     "failed to read writekey from header"),
    ("/v1/track", b'{"userId":"u"}', {"Authorization": "Basic !!!"}, False, 401,
     "failed to read writekey from header"),
    ("/v1/track", b'{"userId":"u"}', {"Authorization": basic("nope")}, False, 401,
     "invalid write key"),
    ("/v1/track", b"", {}, True, 400, "invalid json"),
    ("/v1/batch", b'{"batch":[{"userId":"u"}', {}, True, 400, "invalid json"),
    ("/v1/track", b"[1]", {}, True, 400, "event is not a valid rudder event"),
    ("/v1/batch", b'{"batch":[{"userId":"u"},7]}', {}, True, 400,
     "event is not a valid rudder event"),
    ("/v1/identify", b'{"userId":" ","anonymousId":null}', {}, True, 400,
     "request neither has anonymousId nor userId"),
    ("/v1/batch", b'{"batch":[]}', {}, True, 400, "empty batch payload"),
    ("/v1/batch", b"{}", {}, True, 400, "empty batch payload"),
    ("/v1/batch", b"[]", {}, True, 400, "empty batch payload"),
    ("/v1/track", b"\x1f\x8b not gzip", {"Content-Encoding": "gzip"}, True, 500,
     "failed to read body from request"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "headers", "auth", "status", "message"), ERROR_CASES)
def test_errors_are_rudder_servers_plain_text(
    gateway: str, redis_client: redis.Redis, path, body, headers, auth, status, message
) -> None:
    got_status, got_body, got_headers = post(gateway, path, body, headers, auth=auth)
    assert (got_status, got_body) == (status, message.encode() + b"\n")
    assert got_headers["content-type"] == "text/plain; charset=utf-8"
    assert got_headers["x-content-type-options"] == "nosniff"
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize("path", ["identify", "track", "page", "screen", "group", "alias"])
def test_each_endpoint_answers_ok_and_sets_the_type_from_the_path(
    gateway: str, redis_client: redis.Redis, path: str
) -> None:
    status, body, headers = post(gateway, f"/v1/{path}", b'{"type":"x","anonymousId":"a1"}')
    assert (status, body) == (200, b"ok")
    assert headers["content-type"] == "text/plain; charset=utf-8"
    [event] = stream_events(redis_client)
    assert event["type"] == path
    assert event["request_ip"] == "127.0.0.1"
    for field in ("messageId", "receivedAt", "timestamp", "sentAt", "originalTimestamp"):
        assert isinstance(event[field], str)


def test_any_configured_write_key_is_accepted_and_the_password_ignored(gateway: str) -> None:
    for key in ("other-key", WRITE_KEY):
        auth = {"Authorization": basic(key, "whatever")}
        assert post(gateway, "/v1/page", b'{"userId":"u"}', auth, auth=False)[:2] == (200, b"ok")


def test_gzip_body_is_decompressed(gateway: str, redis_client: redis.Redis) -> None:
    body = gzip.compress(orjson.dumps({"batch": [track("u1", "m1", "2024-05-01T10:00:00Z", "A")]}))
    status, _, _ = post(gateway, "/v1/batch", body, {"Content-Encoding": "gzip"})
    assert status == 200
    assert redis_client.hget("user:u1", "recent_five_purchases.purchase_1") == "A"


def padded_batch(size: int) -> bytes:
    """A valid one-event batch of exactly ``size`` bytes."""
    head, tail = b'{"batch":[{"userId":"u","properties":{"pad":"', b'"}}]}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_the_size_limit_is_4096000_bytes_after_decompression(
    gateway: str, redis_client: redis.Redis
) -> None:
    assert post(gateway, "/v1/batch", padded_batch(4_096_000))[:2] == (200, b"ok")
    too_large = (413, b"request size exceeds max limit\n")
    assert post(gateway, "/v1/batch", padded_batch(4_096_001))[:2] == too_large
    small_on_the_wire = gzip.compress(padded_batch(4_096_001))
    assert len(small_on_the_wire) < 100_000
    answer = post(gateway, "/v1/batch", small_on_the_wire, {"Content-Encoding": "gzip"})
    assert answer[:2] == too_large
    assert len(stream_events(redis_client)) == 1


def test_one_bad_event_rejects_the_whole_batch_and_writes_nothing(
    gateway: str, redis_client: redis.Redis
) -> None:
    identify = {"type": "identify", "userId": "u1", "traits": {"email": "a@b.c"}}
    batch = [identify, track("u1", "m1", "2024-05-01T10:00:00Z", "A"), {"type": "page"}]
    status, body, _ = post(gateway, "/v1/batch", orjson.dumps({"batch": batch}))
    assert (status, body) == (400, b"request neither has anonymousId nor userId\n")
    assert redis_client.dbsize() == 0


# --- effects ------------------------------------------------------------------------------


def test_identify_writes_the_one_encoding_and_purchases_keep_the_newest_five(
    gateway: str, redis_client: redis.Redis
) -> None:
    identify = {
        "type": "identify",
        "userId": "u1",
        "context": {"traits": {"email": "a@b.c", "plan": {"tier": "gold"}, "score": 1.0}},
        "traits": {"tags": ["x", 1e21], "nick": None},
    }
    purchases = [
        track("u1", "m1", "2024-05-01T10:00:00Z", "A", "B"),
        track("u1", "m2", "2024-05-03T10:00:00+02:00", "C"),
        track("u1", "m3", "2024-04-01T10:00:00Z", "OLD"),
        track("u1", "m4", "2024-05-02T10:00:00Z", "D", "E"),
        {**track("u1", "m5", "2024-05-02T11:00:00Z"), "properties": {"sku": "F"}},
    ]
    batch = {"batch": [identify, *purchases]}
    assert post(gateway, "/v1/batch", orjson.dumps(batch))[:2] == (200, b"ok")
    key, fields = encode_identify(identify)
    expected = fields | {
        "recent_five_purchases.purchase_1": "C",
        "recent_five_purchases.purchase_2": "F",
        "recent_five_purchases.purchase_3": "D",
        "recent_five_purchases.purchase_4": "E",
        "recent_five_purchases.purchase_5": "A",
    }
    assert redis_client.hgetall(key) == expected
    assert fields["tags"] == '["x",1e+21]'
    log = json.loads(redis_client.get(purchases_key(key)))
    assert [entry[1] for entry in log] == ["m2", "m5", "m4", "m1", "m3"]
    # A retry of the same batch (same messageIds) changes no profile state.
    assert post(gateway, "/v1/batch", orjson.dumps(batch))[:2] == (200, b"ok")
    assert redis_client.hgetall(key) == expected


def test_identify_the_destination_rejects_is_accepted_and_streamed_only(
    gateway: str, redis_client: redis.Redis
) -> None:
    anonymous = b'{"anonymousId":"a1","context":{"traits":{"email":"a@b.c"}}}'
    no_traits = b'{"userId":"u2","traits":{"nick":null}}'
    for body in (anonymous, no_traits):
        assert post(gateway, "/v1/identify", body)[:2] == (200, b"ok")
    assert sorted(redis_client.keys("user:*")) == []
    assert len(stream_events(redis_client)) == 2


def test_defaults_are_rudder_servers(gateway: str, redis_client: redis.Redis) -> None:
    events = [
        {"userId": "u1", "messageId": "  m1 ", "timestamp": "2024-05-01T10:00:00.5+02:00"},
        # No timestamp: receivedAt minus the time it waited on the device (sentAt - original).
        {
            "userId": "u2",
            "messageId": 7,
            "originalTimestamp": "2024-05-01T10:00:00Z",
            "sentAt": "2024-05-01T10:00:30Z",
        },
        {"anonymousId": "a3", "timestamp": "yesterday"},
    ]
    before = time.time()
    assert post(gateway, "/v1/batch", orjson.dumps({"batch": events}))[:2] == (200, b"ok")
    stored = {e.get("userId", e.get("anonymousId")): e for e in stream_events(redis_client)}
    assert stored["u1"]["messageId"] == "m1"
    assert stored["u1"]["timestamp"] == "2024-05-01T10:00:00.5+02:00"
    assert stored["u1"]["sentAt"] == stored["u1"]["receivedAt"]
    assert len(stored["u2"]["messageId"]) == 36 and stored["u2"]["messageId"] != 7
    received = stored["u2"]["receivedAt"]
    assert len(received) == 24 and received.endswith("Z")

    def epoch(text: str) -> float:
        return datetime.fromisoformat(text).timestamp()

    assert epoch(received) - before == pytest.approx(0, abs=5)
    assert epoch(received) - epoch(stored["u2"]["timestamp"]) == pytest.approx(30, abs=0.001)
    assert stored["a3"]["timestamp"] == stored["a3"]["receivedAt"]


# --- the real SDK -------------------------------------------------------------------------


def test_rudder_sdk_python_batches_gzips_and_lands_in_redis(
    gateway: str, redis_client: redis.Redis
) -> None:
    errors = []
    client = Client(WRITE_KEY, host=gateway, on_error=lambda e, batch: errors.append(e))
    client.identify("u1", {"email": "a@b.c", "plan": {"tier": "gold", "seats": 5}, "vip": True})
    start = datetime(2024, 5, 1, tzinfo=UTC)
    # Sent newest first: the gateway orders by the events' own timestamps, not arrival.
    for day in reversed(range(7)):
        client.track(
            "u1",
            "Order Completed",
            {"products": [{"sku": f"SKU-{day}"}]},
            timestamp=start + timedelta(days=day),
        )
    client.track("u1", "Product Viewed", {"sku": "SKU-X"})
    client.flush()
    client.shutdown()
    assert errors == []
    profile = redis_client.hgetall("user:u1")
    assert profile["email"] == "a@b.c"
    assert profile["plan.seats"] == "5"
    assert profile["vip"] == "true"
    assert [profile[f"recent_five_purchases.purchase_{n}"] for n in range(1, 6)] == [
        "SKU-6",
        "SKU-5",
        "SKU-4",
        "SKU-3",
        "SKU-2",
    ]
    assert len(stream_events(redis_client)) == 9


def test_rudder_sdk_python_gets_no_retry_for_a_400(gateway: str) -> None:
    errors = []
    client = Client("wrong-key", host=gateway, on_error=lambda e, batch: errors.append(e))
    client.track("u1", "Order Completed", {"sku": "A"})
    client.flush()
    client.shutdown()
    [error] = errors
    assert (error.status, error.message) == (401, "invalid write key\n")


# --- Redis going away ---------------------------------------------------------------------


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """A redis-server this test may stop, freeze and kill."""
    port = free_port()
    process = start_redis_server(tmp_path / "redis", port)
    yield process, f"redis://127.0.0.1:{port}/0"
    if process.poll() is None:
        os.kill(process.pid, signal.SIGCONT)
        process.kill()
    process.wait(10)


def test_redis_down_is_a_503_the_sdks_retry(private_redis) -> None:
    process, url = private_redis
    with running_gateway(settings_for(url)) as gateway:
        process.kill()
        process.wait(10)
        status, body, headers = post(gateway, "/v1/track", b'{"userId":"u1"}')
        assert (status, body) == (503, b"event store unavailable, retry later\n")
        assert headers["content-type"] == "text/plain; charset=utf-8"


def test_redis_frozen_mid_request_answers_503_and_the_retry_converges(private_redis) -> None:
    process, url = private_redis
    store = redis.Redis.from_url(url, decode_responses=True)
    batch = orjson.dumps(
        {
            "batch": [
                {
                    "type": "identify",
                    "userId": "u1",
                    "messageId": "m0",
                    "traits": {"email": "a@b.c"},
                },
                track("u1", "m1", "2024-05-01T10:00:00Z", "A"),
                track("u1", "m2", "2024-05-02T10:00:00Z", "B"),
            ]
        }
    )
    with running_gateway(settings_for(url)) as gateway:
        assert post(gateway, "/v1/page", b'{"userId":"warm-up"}')[0] == 200
        os.kill(process.pid, signal.SIGSTOP)
        try:
            status, body, _ = post(gateway, "/v1/batch", batch)
        finally:
            os.kill(process.pid, signal.SIGCONT)
        # Not acknowledged, whatever Redis does with the commands it had received.
        assert (status, body) == (503, b"event store unavailable, retry later\n")
        # The SDK resends the same batch; the profile ends as after one delivery.
        assert post(gateway, "/v1/batch", batch)[:2] == (200, b"ok")
        assert store.hgetall("user:u1") == {
            "email": "a@b.c",
            "recent_five_purchases.purchase_1": "B",
            "recent_five_purchases.purchase_2": "A",
        }
        ids = Counter(e["messageId"] for e in stream_events(store) if e["userId"] == "u1")
        # At least once: each event is in the stream once or, if the frozen EXEC ran after
        # the thaw, twice; never part of a request.
        assert len(ids) == 3 and len(set(ids.values())) == 1
    store.close()


def test_health_reports_redis(private_redis) -> None:
    process, url = private_redis
    with running_gateway(settings_for(url)) as gateway:
        with urllib.request.urlopen(gateway + "/health") as response:
            assert json.loads(response.read()) == {"server": "UP", "redis": "UP"}
        process.kill()
        process.wait(10)
        with pytest.raises(urllib.error.HTTPError) as failure:
            urllib.request.urlopen(gateway + "/health")
        assert failure.value.code == 503


# --- the command -----------------------------------------------------------------------------


def serve_command(port: int) -> list[str]:
    return [sys.executable, "-m", "personalization_pipeline.cli", "serve", "--port", str(port)]


def test_serve_refuses_to_start_without_write_keys() -> None:
    env = {k: v for k, v in os.environ.items() if k != "EVENTS_WRITE_KEYS"}
    result = subprocess.run(
        serve_command(free_port()), env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "set it" in result.stderr and "EVENTS_WRITE_KEYS=demo-write-key" in result.stderr


def test_serve_runs_granian_workers_that_share_redis(
    redis_url: str, redis_client: redis.Redis
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "EVENTS_WRITE_KEYS": f"a,{WRITE_KEY}",
        "REDIS_URL": redis_url,
    }
    process = subprocess.Popen(
        [*serve_command(port), "--workers", "2"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status = post(f"http://127.0.0.1:{port}", "/v1/batch", b"{}")[0]
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert status == 400
        for n in range(20):
            body = orjson.dumps(track("u1", f"m{n}", f"2024-05-01T10:00:{n:02d}Z", f"S{n}"))
            assert post(f"http://127.0.0.1:{port}", "/v1/track", body)[:2] == (200, b"ok")
        assert redis_client.hget("user:u1", "recent_five_purchases.purchase_1") == "S19"
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert f"Event gateway on http://127.0.0.1:{port} (2 workers)" in output
