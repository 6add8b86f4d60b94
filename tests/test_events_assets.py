"""The Dagster side of the event drain: raw_events, events_sensor, and identities in profiles.

Real redis-server and DuckDB files; events are XADDed in the gateway's stream format.
"""

from __future__ import annotations

import os
import time

import dagster as dg
import pytest
import redis

from assets.sensors import TRIGGER_TAG, events_sensor
from personalization_pipeline.definitions import defs
from personalization_pipeline.resources.redis import RedisResource
from personalization_pipeline.settings import current
from tests.test_event_drain import event, xadd


@pytest.fixture(autouse=True)
def default_event_settings(monkeypatch):
    """The documented defaults, whatever the shell exports (the shard count above all)."""
    for variable in list(os.environ):
        if variable.startswith("EVENTS_"):
            monkeypatch.delenv(variable)


def materialization(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (found,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == asset
    ]
    return {key: value.value for key, value in found.materialization.metadata.items()}


def identify(number: int, user_id: str, email: str) -> dict:
    return event(number, type="identify", userId=user_id, context={"traits": {"email": email}})


def test_identify_emails_link_contacts_without_a_user_id(pipeline_resources, redis_client):
    client = redis.Redis.from_url(pipeline_resources["redis"].url)
    xadd(
        client,
        # Contact 98 (kira.fischer.98@example.com) has no app user id in Salesforce.
        identify(1, "app-kira", " Kira.Fischer.98@Example.com "),
        # Two users identified with contact 142's email: ambiguous, it links nobody.
        identify(2, "app-olga-1", "olga.khan.142@example.com"),
        identify(3, "app-olga-2", "olga.khan.142@example.com"),
        # Contact 206's email, but U000001 has a contact of its own, which wins.
        identify(4, "U000001", "olga.moreau.206@example.com"),
        event(5),
    )
    drained = defs.resolve_job_def("events_job").execute_in_process(resources=pipeline_resources)
    landed = materialization(drained, "raw_events")
    assert (landed["events_landed"], landed["backlog_left"], landed["dagster/row_count"]) == (
        5,
        0,
        5,
    )

    built = defs.resolve_job_def("warehouse_actions_job").execute_in_process(
        resources=pipeline_resources
    )

    profiles = materialization(built, "user_profiles")
    assert profiles["contacts_linked_by_email"] == 2
    assert profiles["contacts_with_ambiguous_email"] == 1
    assert redis_client.hgetall("user:app-kira") == {
        "email": "kira.fischer.98@example.com",
        "membership_status": "loyalty_member",
        "income_bracket": "level_2",  # joined on the contact's email, as for any profile
    }
    assert not redis_client.exists("user:app-olga-1", "user:app-olga-2")
    assert redis_client.hget("user:U000001", "email") == "maya.jensen.1@example.com"


def test_raw_events_reports_what_the_drain_did(pipeline_resources):
    client = redis.Redis.from_url(pipeline_resources["redis"].url)
    xadd(client, *[event(n) for n in range(30)], event(0))
    client.xadd("events:0", {"e": "not json"})
    result = defs.resolve_job_def("events_job").execute_in_process(resources=pipeline_resources)
    metadata = materialization(result, "raw_events")
    assert {
        key: metadata[key]
        for key in ("entries_read", "events_landed", "duplicates_skipped", "entries_rejected")
    } == {"entries_read": 32, "events_landed": 30, "duplicates_skipped": 1, "entries_rejected": 1}


# --- events_sensor ---------------------------------------------------------------------------


def tick(instance: dg.DagsterInstance, cursor: str | None, redis_url: str):
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"redis": RedisResource(url=redis_url)},
        sensor_name=events_sensor.name,
    )
    return events_sensor.evaluate_tick(context)


@pytest.fixture
def instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.ephemeral()


def test_events_sensor_is_on_and_looks_every_30_seconds():
    assert events_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert events_sensor.minimum_interval_seconds == 30
    assert events_sensor.job_name == "events_job"


def test_events_sensor_drains_on_backlog_or_interval(instance, redis_url, monkeypatch):
    monkeypatch.setenv("EVENTS_DRAIN_BACKLOG", "100")
    current.cache_clear()
    client = redis.Redis.from_url(redis_url)
    assert tick(instance, None, redis_url).skip_message == "0 events waiting in 4 streams"

    xadd(client, *[event(n) for n in range(10)])
    first = tick(instance, None, redis_url)  # never drained: the interval has passed
    (request,) = first.run_requests
    assert request.run_key == "events:first"
    assert request.tags[TRIGGER_TAG] == "events_sensor"
    assert request.tags["personalization/backlog"] == "10"
    assert time.time() - float(first.cursor) < 5

    below = tick(instance, first.cursor, redis_url)
    assert below.run_requests == [] and below.skip_message == "10 events waiting in 4 streams"

    xadd(client, *[event(n) for n in range(10, 100)])
    (over,) = tick(instance, first.cursor, redis_url).run_requests
    # Evaluated again from the same cursor (a retried tick), it asks for the same run.
    assert over.run_key == f"events:{first.cursor}"
    assert tick(instance, first.cursor, redis_url).run_requests[0].run_key == over.run_key

    monkeypatch.setenv("EVENTS_DRAIN_BACKLOG", "1000")
    current.cache_clear()
    stale_cursor = str(time.time() - 301)
    (due,) = tick(instance, stale_cursor, redis_url).run_requests
    assert due.run_key == f"events:{stale_cursor}"


def test_events_sensor_waits_for_a_drain_in_progress_and_backs_off_after_a_failure(
    instance, redis_url, monkeypatch
):
    monkeypatch.setenv("EVENTS_DRAIN_BACKLOG", "5")
    current.cache_clear()
    xadd(redis.Redis.from_url(redis_url), *[event(n) for n in range(10)])
    recent = str(time.time())
    run = instance.create_run_for_job(job_def=defs.resolve_job_def("events_job"))
    waiting = tick(instance, recent, redis_url)
    assert waiting.run_requests == []
    assert waiting.skip_message == f"Drain run {run.run_id} is NOT_STARTED; waiting for it"

    instance.report_run_failed(run)
    failed = tick(instance, recent, redis_url)
    assert failed.run_requests == []
    assert "the last drain failed" in failed.skip_message
    # Once the interval has passed, a failed drain is tried again.
    assert len(tick(instance, str(time.time() - 301), redis_url).run_requests) == 1


def test_events_sensor_names_the_fix_when_redis_is_down(instance):
    with pytest.raises(ConnectionError, match="start redis-server or set REDIS_URL"):
        tick(instance, None, "redis://127.0.0.1:1/0")
