"""Activation: project warehouse models into the Redis keyspace the product reads."""

from contextlib import closing
from typing import Literal

import dagster as dg

from assets.warehouse import user_profiles
from personalization_pipeline.metadata import PREVIEW_ROWS, markdown_table, mask_personal
from personalization_pipeline.resources.redis import RedisResource
from personalization_pipeline.resources.warehouse import WarehouseResource
from personalization_pipeline.sync.engine import SyncSpec, sync_table
from personalization_pipeline.sync.identify import IdentifyError, user_key

PROFILE_TRAITS = ["email", "membership_status", "income_bracket"]
# Defined in personalization_pipeline/checks.py (which imports this module, hence the names);
# tests/test_definitions.py keeps the two in step.
USER_PROFILES_BLOCKING_CHECKS = (
    "user_profiles_user_id_valid",
    "user_profiles_membership_status_allowed",
    "user_profiles_income_bracket_format",
    "user_profiles_shrink_guard",
)
PROFILE_SYNC = SyncSpec(
    name="user_profiles",
    source="analytics.user_profiles",
    key_column="user_id",
    fields=PROFILE_TRAITS,
)


class RedisSyncConfig(dg.Config):
    mode: Literal["upsert", "mirror", "full"] = "upsert"
    """upsert: write added/changed rows; mirror: also remove this sync's fields of rows that
    left the table; full: rewrite every row (reconciliation)."""
    dry_run: bool = False
    """Compute the plan and samples of each change; write nothing."""
    force: bool = False
    """Let mirror remove more than max_delete_fraction of the synced keys."""
    remove_nulls: bool = True
    """HDEL fields that became null (RudderStack keeps them; off reproduces that)."""
    max_delete_fraction: float = 0.2


@dg.asset(group_name="activation", kinds={"duckdb", "redis"}, pool="duckdb", deps=[user_profiles])
def redis_user_profiles(
    context: dg.AssetExecutionContext,
    config: RedisSyncConfig,
    warehouse: WarehouseResource,
    redis: RedisResource,
) -> dg.MaterializeResult:
    """Profiles in Redis as user:<userId> hashes, as RudderStack's Redis destination writes them."""
    refuse_if_profiles_failed_their_checks(context)
    # A dry run connects too: whether Redis still holds what the snapshot says is in the plan.
    with closing(redis.get_client()) as client, warehouse.connect() as connection:
        result = sync_table(
            connection,
            client,
            PROFILE_SYNC,
            prefix=redis.prefix,
            mode=config.mode,
            dry_run=config.dry_run,
            force=config.force,
            remove_nulls=config.remove_nulls,
            max_delete_fraction=config.max_delete_fraction,
        )
        preview = None if config.dry_run else _read_back_preview(connection, client, redis.prefix)
    context.log.info(
        f"{'Planned' if result.dry_run else 'Synced'} {result.mode}: {result.added} added,"
        f" {result.changed} changed, {result.removed} removed, {result.unchanged} unchanged,"
        f" {result.rejected} rejected; {result.rows_written} rows in {result.seconds:.2f}s"
    )
    if result.full_sync_reason:
        context.log.warning(f"Every profile rewritten, not only changes: {result.full_sync_reason}")
    for warning in result.warnings:
        context.log.warning(warning)
    metadata: dict[str, object] = {
        **result.metadata(),
        "dagster/row_count": result.added + result.changed + result.unchanged,
    }
    if result.dry_run:
        metadata["plan_samples"] = dg.MetadataValue.json(_masked_samples(result.samples))
    else:
        metadata["preview"] = preview
    return dg.MaterializeResult(metadata=metadata)


def _masked_samples(samples: dict[str, list[dict]]) -> dict[str, list[dict]]:
    return {
        kind: [{**row, "fields": mask_personal(row["fields"])} if "fields" in row else row
               for row in rows]
        for kind, rows in samples.items()
    }  # fmt: skip


def refuse_if_profiles_failed_their_checks(context: dg.AssetExecutionContext) -> None:
    """Runs that sync Redis without rebuilding user_profiles (the verify and reconcile
    schedules) must not publish a table whose latest blocking checks failed: the failed run
    already replaced it, and only its own sync step was skipped."""
    failed = []
    for name in USER_PROFILES_BLOCKING_CHECKS:
        key = dg.AssetCheckKey(user_profiles.key, name)
        evaluation, run_id = latest_check_evaluation(context.instance, key)
        if evaluation is not None and not evaluation.passed:
            failed.append(f"{name} (run {run_id})")
    if failed:
        raise dg.Failure(
            description=(
                f"user_profiles failed {', '.join(failed)}; Redis keeps the last good profiles. "
                "Fix the source data (or the rule) and run warehouse_actions_job again"
            ),
            allow_retries=False,
        )


def latest_check_evaluation(
    instance: dg.DagsterInstance, key: dg.AssetCheckKey
) -> tuple[dg.AssetCheckEvaluation | None, str | None]:
    """The newest finished evaluation of a check. Newer records can be merely planned: a run
    in progress, or one whose upstream step failed before the check could run."""
    for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=20):
        if isinstance(record.evaluation, dg.AssetCheckEvaluation):
            return record.evaluation, record.run_id
    return None, None


def _read_back_preview(connection, client, prefix: str) -> dg.MetadataValue:
    """The first profiles as Redis now holds them: the stored bytes, not our intent."""
    users = connection.execute(
        f"SELECT user_id FROM analytics.user_profiles ORDER BY user_id LIMIT {PREVIEW_ROWS}"
    ).fetchall()
    keys = []
    for (user_id,) in users:
        try:
            keys.append(user_key(user_id, prefix))
        except IdentifyError:
            continue
    rows = [(key, _decoded(client.hgetall(key))) for key in keys]
    return dg.MetadataValue.md(markdown_table(["key", "fields"], rows))


def _decoded(fields: dict[bytes, bytes]) -> dict[str, object]:
    return mask_personal({name.decode(): value.decode() for name, value in sorted(fields.items())})
