"""Schedules: a nightly full reconcile that repairs drift, and an opt-in 30-minute cadence."""

from datetime import UTC, datetime

import dagster as dg

from assets.schedules import reconcile_schedule, warehouse_actions_schedule
from personalization_pipeline.definitions import defs


def test_reconcile_schedule_runs_nightly():
    assert reconcile_schedule.cron_schedule == "0 3 * * *"
    assert reconcile_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert reconcile_schedule.job_name == "redis_profiles_job"


def scheduled_run_config(schedule: dg.ScheduleDefinition) -> dict:
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 1, 2, 3, tzinfo=UTC)
    )
    (request,) = schedule.evaluate_tick(context).run_requests
    return request.run_config


def test_reconcile_repairs_drift_in_full_mode(pipeline_resources, redis_client):
    instance = dg.DagsterInstance.ephemeral()
    run = defs.resolve_job_def("warehouse_actions_job").execute_in_process(
        resources=pipeline_resources, instance=instance
    )
    assert run.success
    good = redis_client.hgetall("user:U000002")
    redis_client.delete("user:U000002")
    redis_client.hset("user:U000001", "membership_status", "hand-edited")

    reconcile = defs.resolve_job_def("redis_profiles_job").execute_in_process(
        resources=pipeline_resources,
        instance=instance,
        run_config=scheduled_run_config(reconcile_schedule),
    )
    assert reconcile.success
    (event,) = reconcile.get_asset_materialization_events()
    assert event.materialization.metadata["mode"].value == "full"
    assert redis_client.hgetall("user:U000002") == good
    assert redis_client.hget("user:U000001", "membership_status") == "loyalty_member"


def test_fixed_cadence_schedule_is_off_by_default():
    assert warehouse_actions_schedule.cron_schedule == "*/30 * * * *"
    assert warehouse_actions_schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert warehouse_actions_schedule.job_name == "warehouse_actions_job"
