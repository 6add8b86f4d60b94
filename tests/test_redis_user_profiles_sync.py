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
