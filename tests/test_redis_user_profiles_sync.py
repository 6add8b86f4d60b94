"""redis_user_profiles runs the sync engine: run config picks mode, dry run and force."""

import dagster as dg

from personalization_pipeline.definitions import defs


def run(resources: dict, **config) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("warehouse_actions_job")
    return job.execute_in_process(
        resources=resources,
        run_config={"ops": {"redis_user_profiles": {"config": config}}},
    )


def sync_metadata(result: dg.ExecuteInProcessResult) -> dict:
    (materialization,) = result.asset_materializations_for_node("redis_user_profiles")
    return {name: value.value for name, value in materialization.metadata.items()}


def test_dry_run_plans_and_writes_nothing(pipeline_resources, redis_client):
    metadata = sync_metadata(run(pipeline_resources, dry_run=True))
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
    (shown,) = run(pipeline_resources).asset_materializations_for_node("user_profiles")
    assert "maya.jensen.1@example.com" in shown.metadata["preview"].value
