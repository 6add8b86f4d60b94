"""Sensors request a run only when a source changed, and never lose a change on an error."""

import json
import os
import re
import shutil
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from assets.sensors import (
    ATTEMPT_TAG,
    RETRY_OF_TAG,
    TRIGGER_TAG,
    income_enrichment_sensor,
    salesforce_contacts_sensor,
)
from assets.sources import income_enrichment, salesforce_contacts
from personalization_pipeline.definitions import defs
from personalization_pipeline.resources.enrichment import EnrichmentFileResource
from personalization_pipeline.resources.salesforce import SalesforceApiSource, SampleContactSource
from personalization_pipeline.settings import Settings
from tests.conftest import SAMPLE_DIR, free_port
from tests.test_salesforce_asset import local_source, materialize


def instance_with_sources_loaded() -> dg.DagsterInstance:
    """An instance in which both sources have been materialized before (not a first deploy)."""
    instance = dg.DagsterInstance.ephemeral()
    for source in (salesforce_contacts, income_enrichment):
        instance.report_runless_asset_event(dg.AssetMaterialization(source.key))
    return instance


def tick(sensor: dg.SensorDefinition, cursor: str | None, **resources):
    context = dg.build_sensor_context(
        instance=instance_with_sources_loaded(),
        cursor=cursor,
        resources=resources,
        sensor_name=sensor.name,
    )
    return sensor.evaluate_tick(context)


@pytest.fixture
def contacts_csv(tmp_path: Path) -> Path:
    path = tmp_path / "contacts.csv"
    shutil.copyfile(SAMPLE_DIR / "salesforce_contacts.csv", path)
    return path


@pytest.fixture
def income_csv(tmp_path: Path) -> Path:
    path = tmp_path / "income.csv"
    shutil.copyfile(SAMPLE_DIR / "income_enrichment.csv", path)
    return path


def test_sensors_run_every_30_minutes_by_default():
    for sensor in (salesforce_contacts_sensor, income_enrichment_sensor):
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        assert sensor.minimum_interval_seconds == 1800
        assert sensor.job_name == "warehouse_actions_job"


def test_interval_is_configurable_down_to_a_minute():
    settings = Settings.from_env({"SENSOR_INTERVAL_SECONDS": "60"})
    assert settings.automation.sensor_interval_seconds == 60
    with pytest.raises(ValueError, match="below the 60-second minimum"):
        Settings.from_env({"SENSOR_INTERVAL_SECONDS": "30"})


def test_contacts_sensor_runs_on_change_and_skips_when_unchanged(contacts_csv: Path):
    source = SampleContactSource(path=str(contacts_csv))
    first = tick(salesforce_contacts_sensor, None, salesforce=source)
    (request,) = first.run_requests
    assert first.cursor == "1000 contacts, latest SystemModstamp 2024-10-27T16:38:00.000Z"
    assert request.run_key.startswith("contacts:")
    assert request.tags[TRIGGER_TAG] == "salesforce_contacts_sensor"
    assert {key.to_user_string() for key in request.asset_selection} == {
        "salesforce_contacts",
        "user_profiles",
        "redis_user_profiles",
    }

    unchanged = tick(salesforce_contacts_sensor, first.cursor, salesforce=source)
    assert unchanged.run_requests == []
    assert "No Contact changed" in unchanged.skip_message
    assert unchanged.cursor == first.cursor

    contacts_csv.write_text(
        contacts_csv.read_text().replace("2024-07-13T12:26:00.000Z", "2024-11-01T09:00:00.000Z")
    )
    changed = tick(salesforce_contacts_sensor, first.cursor, salesforce=source)
    (again,) = changed.run_requests
    assert changed.cursor == "1000 contacts, latest SystemModstamp 2024-11-01T09:00:00.000Z"
    assert again.run_key != request.run_key


def test_contacts_sensor_reports_a_source_error_and_keeps_its_cursor(tmp_path: Path):
    unreachable = SalesforceApiSource(
        instance_url=f"https://127.0.0.1:{free_port()}",
        session_id="00D!expired",
        retry_base_seconds=0.001,
    )
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(),
        cursor="previous",
        resources={"salesforce": unreachable},
    )
    with pytest.raises(Exception, match=r"Connection refused|Max retries exceeded"):
        salesforce_contacts_sensor.evaluate_tick(context)
    assert context.cursor == "previous"


def test_income_sensor_follows_content_not_timestamps(income_csv: Path):
    income_file = EnrichmentFileResource(path=str(income_csv), settle_seconds=0)
    first = tick(income_enrichment_sensor, None, income_file=income_file)
    (request,) = first.run_requests
    assert {key.to_user_string() for key in request.asset_selection} == {
        "income_enrichment",
        "user_profiles",
        "redis_user_profiles",
    }
    assert set(json.loads(first.cursor)) == {"size", "mtime_ns", "sha256"}

    unchanged = tick(income_enrichment_sensor, first.cursor, income_file=income_file)
    assert unchanged.run_requests == [] and "unchanged" in unchanged.skip_message

    stat = income_csv.stat()
    os.utime(income_csv, ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**10))
    touched = tick(income_enrichment_sensor, first.cursor, income_file=income_file)
    assert touched.run_requests == [] and "content is unchanged" in touched.skip_message
    assert json.loads(touched.cursor)["mtime_ns"] == stat.st_mtime_ns - 10**10

    income_csv.write_text(income_csv.read_text().replace("level_2", "level_3", 1))
    changed = tick(income_enrichment_sensor, touched.cursor, income_file=income_file)
    (again,) = changed.run_requests
    assert again.run_key != request.run_key


def test_income_sensor_reports_a_missing_file_and_keeps_its_cursor(tmp_path: Path):
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(),
        cursor="{}",
        resources={"income_file": EnrichmentFileResource(path=str(tmp_path / "absent.csv"))},
    )
    with pytest.raises(Exception, match=r"absent\.csv does not exist: set INCOME_ENRICHMENT_PATH"):
        income_enrichment_sensor.evaluate_tick(context)
    assert context.cursor == "{}"


def test_contacts_sensor_asks_the_salesforce_api(salesforce_server):
    org = salesforce_server.org
    source = local_source(salesforce_server)
    # getDeleted sees a purge only from the next whole minute on, which would change the marker
    # once more; most of a minute keeps every tick below in the same one.
    org.advance_to_next_minute()
    first_id, second_id = org.insert_many(2)
    first = tick(salesforce_contacts_sensor, None, salesforce=source)
    assert len(first.run_requests) == 1 and first.cursor.startswith("2 contacts")

    assert tick(salesforce_contacts_sensor, first.cursor, salesforce=source).run_requests == []

    cursor = first.cursor
    for change in (
        lambda: org.update(first_id, Email="changed@example.com"),
        lambda: org.delete(second_id),  # soft delete: IsDeleted = true, SystemModstamp moves
        lambda: org.purge(second_id),  # hard delete: only the count shows it
    ):
        change()
        result = tick(salesforce_contacts_sensor, cursor, salesforce=source)
        assert len(result.run_requests) == 1, result.skip_message
        assert result.cursor != cursor
        cursor = result.cursor

    org.inject("server_error", times=1)
    assert tick(salesforce_contacts_sensor, cursor, salesforce=source).run_requests == []


def test_a_hard_delete_is_marked_by_the_runs_the_sensor_starts(salesforce_server, tmp_path):
    org = salesforce_server.org
    source = local_source(salesforce_server)
    gone, *_ = org.insert_many(3)
    first = tick(salesforce_contacts_sensor, None, salesforce=source)
    assert materialize(salesforce_server, tmp_path).success

    def landed_deleted() -> bool:
        with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as warehouse:
            return warehouse.execute(
                "SELECT is_deleted FROM raw.salesforce_contact WHERE id = ?", [gone]
            ).fetchone()[0]

    org.advance_to_next_minute()
    org.purge(gone)  # a hard delete: the count drops at once
    second = tick(salesforce_contacts_sensor, first.cursor, salesforce=source)
    assert len(second.run_requests) == 1
    assert materialize(salesforce_server, tmp_path).success
    # getDeleted ignores seconds, so the run started in the delete's minute cannot see it yet.
    assert not landed_deleted()
    assert tick(salesforce_contacts_sensor, second.cursor, salesforce=source).run_requests == []

    org.advance(minutes=1)
    # Once getDeleted reports it, the marker moves, and the run it starts marks the contact.
    third = tick(salesforce_contacts_sensor, second.cursor, salesforce=source)
    assert len(third.run_requests) == 1, third.skip_message
    assert "latest delete" in third.cursor and third.cursor != second.cursor
    assert materialize(salesforce_server, tmp_path).success
    assert landed_deleted()


def test_income_sensor_waits_for_a_file_still_being_written(income_csv: Path):
    income_file = EnrichmentFileResource(path=str(income_csv), settle_seconds=3600)
    result = tick(income_enrichment_sensor, None, income_file=income_file)
    assert result.run_requests == [] and "may still be being written" in result.skip_message
    assert result.cursor is None

    stat = income_csv.stat()
    two_hours_ago = stat.st_mtime_ns - 2 * 3600 * 10**9
    os.utime(income_csv, ns=(stat.st_atime_ns, two_hours_ago))
    assert len(tick(income_enrichment_sensor, None, income_file=income_file).run_requests) == 1


def test_a_failed_run_is_requested_again_until_it_succeeds(pipeline_resources, contacts_csv):
    instance = dg.DagsterInstance.ephemeral()
    source = SampleContactSource(path=str(contacts_csv))
    marker = source.change_marker()

    def sensor_tick():
        context = dg.build_sensor_context(
            instance=instance,
            cursor=marker,
            resources={"salesforce": source},
            sensor_name="salesforce_contacts_sensor",
        )
        return salesforce_contacts_sensor.evaluate_tick(context)

    assert sensor_tick().run_requests == []
    unreadable = contacts_csv.with_name("unreadable.csv")
    unreadable.write_text("Id\n")  # fails at once, without step retries
    broken = {**pipeline_resources, "salesforce": SampleContactSource(path=str(unreadable))}
    job = defs.resolve_job_def("warehouse_actions_job")
    tags = {TRIGGER_TAG: "salesforce_contacts_sensor"}
    for attempt in (2, 3):
        failed = job.execute_in_process(
            resources=broken, instance=instance, tags=tags, raise_on_error=False
        )
        assert not failed.success
        (retry,) = sensor_tick().run_requests
        assert retry.run_key == f"retry:{failed.run_id}"
        assert retry.tags[RETRY_OF_TAG] == failed.run_id
        assert retry.tags[ATTEMPT_TAG] == str(attempt)
        tags = retry.tags

    last = job.execute_in_process(
        resources=broken, instance=instance, tags=tags, raise_on_error=False
    )
    assert not last.success
    assert sensor_tick().run_requests == [], "three failed runs in a row need a person"

    assert job.execute_in_process(
        resources=pipeline_resources, instance=instance, tags=tags
    ).success
    assert sensor_tick().run_requests == []


def test_a_first_deploy_loads_both_sources_whichever_sensor_ticks_first(income_csv: Path):
    """user_profiles joins both sources: from the income sensor alone it would be empty."""
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(),
        resources={"income_file": EnrichmentFileResource(path=str(income_csv), settle_seconds=0)},
        sensor_name=income_enrichment_sensor.name,
    )
    (request,) = income_enrichment_sensor.evaluate_tick(context).run_requests
    assert {key.to_user_string() for key in request.asset_selection} == {
        "salesforce_contacts",
        "income_enrichment",
        "user_profiles",
        "redis_user_profiles",
    }


def test_a_future_dated_income_file_settles_on_this_hosts_clock(income_csv: Path):
    """A writer whose clock is a day ahead used to leave the file waiting a day, reported as
    changed '-86400s ago'."""
    stat = income_csv.stat()
    os.utime(income_csv, ns=(stat.st_atime_ns, time.time_ns() + 24 * 3600 * 10**9))
    income_file = EnrichmentFileResource(path=str(income_csv), settle_seconds=1)
    first = tick(income_enrichment_sensor, None, income_file=income_file)
    assert first.run_requests == []
    assert re.search(r"is dated 86\d{3}s in the future: the clock of the host", first.skip_message)
    assert "ago" not in first.skip_message

    time.sleep(1.1)
    second = tick(income_enrichment_sensor, first.cursor, income_file=income_file)
    assert len(second.run_requests) == 1, second.skip_message
    assert set(json.loads(second.cursor)) == {"size", "mtime_ns", "sha256"}
    assert tick(income_enrichment_sensor, second.cursor, income_file=income_file).run_requests == []


def test_a_run_the_sensors_did_not_start_counts_so_a_first_tick_starts_nothing(
    pipeline_resources,
):
    """`make demo` then `make dev`: the demo's run landed the sources as they are, so the
    sensors' first ticks (no cursor yet) compare with what it recorded and start no run."""
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("warehouse_actions_job")
    assert job.execute_in_process(instance=instance, resources=pipeline_resources).success
    salesforce = pipeline_resources["salesforce"]
    income = EnrichmentFileResource(path=pipeline_resources["income_file"].path, settle_seconds=0)
    for sensor, resources in (
        (salesforce_contacts_sensor, {"salesforce": salesforce}),
        (income_enrichment_sensor, {"income_file": income}),
    ):
        context = dg.build_sensor_context(
            instance=instance, cursor=None, resources=resources, sensor_name=sensor.name
        )
        result = sensor.evaluate_tick(context)
        assert not result.run_requests, sensor.name
        assert "latest materialization already" in result.skip_message
        assert result.cursor  # the next tick compares with the source as seen now
