"""redis_user_profiles runs the sync engine: run config picks mode, dry run and force."""

import dagster as dg

from personalization_pipeline.definitions import defs
from personalization_pipeline.settings import current


def run(
    resources: dict, instance: dg.DagsterInstance | None = None, **config
) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("warehouse_actions_job")
    return job.execute_in_process(
        resources=resources,
        run_config={"ops": {"redis_user_profiles": {"config": config}}},
        instance=instance,
    )


def sync_metadata(result: dg.ExecuteInProcessResult) -> dict:
    (materialization,) = result.asset_materializations_for_node("redis_user_profiles")
    return {name: value.value for name, value in materialization.metadata.items()}


def test_dry_run_plans_writes_nothing_and_is_not_a_materialization(
    pipeline_resources, redis_client
):
    """A dry run wrote nothing, so recording it as a materialization would reset the
    freshness of a Redis it never touched: it is an observation carrying the plan."""
    result = run(pipeline_resources, dry_run=True)
    assert result.asset_materializations_for_node("redis_user_profiles") == []
    (observation,) = [
        event.asset_observation_data.asset_observation
        for event in result.all_events
        if event.event_type_value == "ASSET_OBSERVATION"
    ]
    metadata = {name: value.value for name, value in observation.metadata.items()}
    assert redis_client.dbsize() == 0
    assert metadata["dry_run"] is True and metadata["rows_written"] == 0
    assert metadata["added"] > 900
    assert metadata["plan_samples"]["added"][0]["key"].startswith("user:")


def test_metadata_counts_and_an_incremental_second_run(pipeline_resources, redis_client):
    first = sync_metadata(run(pipeline_resources))
    assert first["mode"] == "upsert" and first["rows_written"] == first["added"] > 900
    for name in ("changed", "removed", "unchanged", "rejected", "seconds", "rows_per_second"):
        assert name in first
    second = sync_metadata(run(pipeline_resources, mode="mirror"))
    assert (second["mode"], second["rows_written"], second["removed"]) == ("mirror", 0, 0)
    assert second["unchanged"] == first["added"]
    assert first["rewritten"] == second["rewritten"] == 0


def test_a_full_sync_reports_rows_rewritten(pipeline_resources, redis_client):
    """Not "0 added, 962 unchanged": a full sync rewrote every row."""
    instance = dg.DagsterInstance.ephemeral()
    run(pipeline_resources, instance=instance)
    result = run(pipeline_resources, mode="full", instance=instance)
    assert sync_metadata(result)["rewritten"] == sync_metadata(result)["rows_written"] == 962
    (message,) = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.user_message.startswith("Synced full")
    ]
    assert "rewritten 962" in message and "unchanged" not in message


def test_the_verify_job_rewrites_a_flushed_redis(pipeline_resources, redis_client):
    """redis_verify_schedule runs redis_profiles_job incrementally every 30 minutes: after
    FLUSHALL (or a restart without persistence) its next run repairs every profile."""
    run(pipeline_resources)
    profiles = redis_client.dbsize()
    redis_client.flushall()
    verify = defs.resolve_job_def("redis_profiles_job").execute_in_process(
        resources=pipeline_resources
    )
    (materialization,) = verify.asset_materializations_for_node("redis_user_profiles")
    reason = materialization.metadata["full_sync_reason"].value
    assert "Redis lost its data" in reason
    assert redis_client.dbsize() == profiles
    assert redis_client.hget("user:U000001", "membership_status") == "loyalty_member"


def test_previews_mask_personal_data_unless_asked(pipeline_resources, monkeypatch):
    result = run(pipeline_resources)
    previews = [
        str(materialization.metadata["preview"].value)
        for node in ("salesforce_contacts", "user_profiles", "redis_user_profiles")
        for materialization in result.asset_materializations_for_node(node)
    ]
    assert all("***@example.com" in preview for preview in previews)
    assert not any("maya.jensen.1@example.com" in preview for preview in previews)
    monkeypatch.setenv("PREVIEW_PERSONAL_DATA", "true")
    current.cache_clear()
    (shown,) = run(pipeline_resources).asset_materializations_for_node("user_profiles")
    assert "maya.jensen.1@example.com" in shown.metadata["preview"].value
