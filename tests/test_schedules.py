"""Schedules: a verify sync every 30 minutes and a nightly full reconcile, both of what has been
built; and an opt-in 30-minute cadence."""

from datetime import UTC, datetime

import dagster as dg

from assets.schedules import reconcile_schedule, redis_verify_schedule, warehouse_actions_schedule
from personalization_pipeline.definitions import defs

TICK = datetime(2026, 1, 2, 3, tzinfo=UTC)


def test_reconcile_schedule_runs_nightly():
    assert reconcile_schedule.cron_schedule == "0 3 * * *"
    assert reconcile_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert reconcile_schedule.job_name == "redis_profiles_job"


def tick(schedule: dg.ScheduleDefinition, instance: dg.DagsterInstance):
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=TICK, repository_def=defs.get_repository_def()
    )
    return schedule.evaluate_tick(context)


def test_schedules_skip_while_nothing_is_built():
    """A new deployment: no table exists, so there is nothing to verify or reconcile, and a run
    would only fail on the missing tables every tick."""
    with dg.instance_for_test() as instance:
        for schedule in (redis_verify_schedule, reconcile_schedule):
            result = tick(schedule, instance)
            assert result.run_requests == []
            assert "redis_user_profiles" in result.skip_message
            assert "never built" in result.skip_message


def test_verify_syncs_the_profiles_before_the_model_is_built(pipeline_resources, redis_client):
    """Profiles built, recommendations not (no catalog has arrived): the verify tick takes the
    profile sync and its read-back, and the run it asks for succeeds and repairs Redis."""
    with dg.instance_for_test() as instance:
        warehouse_job = defs.resolve_job_def("warehouse_actions_job")
        assert warehouse_job.execute_in_process(
            resources=pipeline_resources, instance=instance
        ).success
        redis_client.flushall()
        (request,) = tick(redis_verify_schedule, instance).run_requests
        assert request.asset_selection == [dg.AssetKey("redis_user_profiles")]
        # The run the daemon would launch: the requested assets with their checks.
        verify = dg.materialize(
            [*defs.assets, *defs.asset_checks],
            selection=request.asset_selection,
            resources=pipeline_resources,
            instance=instance,
        )
        assert verify.success
        checks = verify.get_asset_check_evaluations()
        assert [(c.asset_key.to_user_string(), c.passed) for c in checks] == [
            ("redis_user_profiles", True)
        ]
        assert redis_client.hget("user:U000001", "membership_status") == "loyalty_member"


def test_reconcile_repairs_drift_in_full_mode(pipeline_resources, redis_client):
    with dg.instance_for_test() as instance:
        run = defs.resolve_job_def("warehouse_actions_job").execute_in_process(
            resources=pipeline_resources, instance=instance
        )
        assert run.success
        good = redis_client.hgetall("user:U000002")
        redis_client.delete("user:U000002")
        redis_client.hset("user:U000001", "membership_status", "hand-edited")

        (request,) = tick(reconcile_schedule, instance).run_requests
        reconcile = defs.resolve_job_def("redis_profiles_job").execute_in_process(
            resources=pipeline_resources, instance=instance, run_config=request.run_config
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
