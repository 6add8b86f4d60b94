"""One spec in, everything a warehouse table synced to Redis needs out.

A spec is a `SyncSpec` (rows become hashes, sync/engine.py) or a `SortedSetSpec` (rows become
members of sorted sets, each list replaced whole when it changed, sync/sorted_sets.py).
`synced_table(spec, built_by=..., description=...)` makes, for either kind:

- the activation asset ``redis_<spec.name>`` (config below, documented in the Launchpad), which
  syncs the spec with the engine and reports what it did;
- the gate inside it: a run that syncs without rebuilding the source table (verify, reconcile)
  refuses to publish it while the latest evaluation of any blocking check on the asset that
  builds it failed. The list comes from the check definitions themselves, at run time;
- its read-back check ``readback``: a random sample read back from Redis, field by field
  (hashes) or member by member with scores (sorted sets);
- the freshness policy (the product reads Redis, so staleness is measured there);
- the preview: the first keys as Redis now holds them;
- keys: `SyncSpec.key` is the one key builder, shared with the engine's SQL.

Adding a table to Redis is one `synced_table(...)` in a module of the graph.
"""

from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import dagster as dg
from pydantic import Field

from personalization_pipeline.metadata import PREVIEW_ROWS, markdown_table, mask_personal
from personalization_pipeline.resources.redis import RedisResource
from personalization_pipeline.resources.rules import ProfileRulesResource
from personalization_pipeline.resources.warehouse import WarehouseResource
from personalization_pipeline.settings import current
from personalization_pipeline.sync.engine import SyncResult, SyncSpec, sync_table
from personalization_pipeline.sync.identify import IdentifyError, identify_fields
from personalization_pipeline.sync.sorted_sets import (
    PREVIEW_MEMBERS,
    SortedSetSpec,
    read_lists,
    sync_sorted_sets,
)

# The product reads Redis: a table older than this is stale for personalization.
REDIS_FRESHNESS = dg.FreshnessPolicy.time_window(
    warn_window=timedelta(minutes=35), fail_window=timedelta(minutes=60)
)
READBACK_CHECK = "readback"
MISMATCH_EXAMPLES = 5


class GuardedSyncConfig(dg.Config):
    """What every sync's run config has: the dry run and the guard against mass removal."""

    dry_run: bool = Field(
        default=False,
        description=(
            "Compute the plan and sample each kind of change; write nothing to Redis or the "
            "warehouse. Recorded as an observation, not a materialization."
        ),
    )
    force: bool = Field(
        default=False,
        description=(
            "Let a run remove more than max_delete_fraction of the synced keys (mirror mode) "
            "or lists (sorted sets)."
        ),
    )
    max_delete_fraction: float = Field(
        default=0.2,
        description=(
            "A run that would remove more than this share of the synced keys (mirror mode) or "
            "lists (sorted sets) fails before writing anything, unless force is set."
        ),
    )


class RedisSyncConfig(GuardedSyncConfig):
    """How one run syncs a warehouse table into Redis."""

    mode: Literal["upsert", "mirror", "full"] = Field(
        default="upsert",
        description=(
            "upsert: write added and changed rows (RudderStack's behaviour). mirror: also "
            "remove this sync's fields from keys whose rows left the table. full: rewrite "
            "every row, repairing drift the snapshot cannot see (reconciliation)."
        ),
    )
    remove_nulls: bool = Field(
        default=True,
        description=(
            "Remove (HDEL) fields whose column became null. RudderStack keeps them; false "
            "reproduces that."
        ),
    )


class SortedSetSyncConfig(GuardedSyncConfig):
    """How one run syncs a warehouse table into Redis sorted sets."""

    mode: Literal["incremental", "full"] = Field(
        default="incremental",
        description=(
            "incremental: replace the lists that changed and delete those that left the table. "
            "full: rewrite every list, repairing drift the snapshot cannot see (reconciliation)."
        ),
    )


@dataclass(frozen=True)
class SyncedTable:
    """What `synced_table` made for one spec."""

    spec: SyncSpec | SortedSetSpec
    asset: dg.AssetsDefinition
    readback: dg.AssetChecksDefinition

    def full_sync_run_config(self) -> dict:
        """Run config that rewrites every row of this table (the nightly reconcile)."""
        return {"ops": {self.asset.op.name: {"config": {"mode": "full"}}}}


def synced_table(
    spec: SyncSpec | SortedSetSpec,
    *,
    built_by: dg.AssetKey | dg.AssetsDefinition,
    description: str,
    owners: Sequence[str] = (),
    tags: Mapping[str, str] | None = None,
    freshness: dg.FreshnessPolicy = REDIS_FRESHNESS,
) -> SyncedTable:
    """The asset, read-back check, gate and freshness that put `spec` in Redis.

    `built_by` is the asset that builds ``spec.source``; the sync runs after it and refuses
    to publish it while one of its blocking checks failed.
    """
    source_key = built_by if isinstance(built_by, dg.AssetKey) else built_by.key
    name = f"redis_{spec.name}"
    activation_asset = dg.asset(
        name=name,
        description=description,
        group_name="activation",
        kinds={"duckdb", "redis"},
        owners=list(owners),
        tags=dict(tags or {}),
        pool="duckdb",
        deps=[source_key],
        freshness_policy=freshness,
        output_required=False,
    )
    if isinstance(spec, SortedSetSpec):
        return sorted_set_table(spec, activation_asset, source_key, name)

    @activation_asset
    def _sync(
        context: dg.AssetExecutionContext,
        config: RedisSyncConfig,
        warehouse: WarehouseResource,
        redis: RedisResource,
    ) -> Iterator[dg.MaterializeResult]:
        refuse_if_blocking_checks_failed(context, source_key)
        # A dry run connects too: whether Redis still holds what the snapshot says is in the plan.
        with closing(redis.get_client()) as client, warehouse.connect() as connection:
            result = sync_table(
                connection,
                client,
                spec,
                prefix=redis.prefix,
                mode=config.mode,
                dry_run=config.dry_run,
                force=config.force,
                remove_nulls=config.remove_nulls,
                max_delete_fraction=config.max_delete_fraction,
                run_id=context.run.run_id,
                memory_limit=current().warehouse.sync_memory_limit,
            )
            preview = None if result.dry_run else read_back_preview(connection, client, spec, redis)
        log_result(context, result, "row")
        metadata = {**result.metadata(), "rewritten": rewritten(result)}
        if result.dry_run:
            observe_plan(context, metadata, masked_samples(result.samples))
            return
        metadata["dagster/row_count"] = result.added + result.changed + result.unchanged
        metadata["preview"] = preview
        yield dg.MaterializeResult(metadata=metadata)

    description = (
        f"A random sample of {spec.source} read back from Redis equals the warehouse, field by "
        "field (REDIS_READBACK_SAMPLE rows)."
    )
    return SyncedTable(spec, _sync, readback_check(_sync, description, read_back, spec, name))


def sorted_set_table(
    spec: SortedSetSpec, activation_asset, source_key: dg.AssetKey, name: str
) -> SyncedTable:
    """The asset and read-back check of a sorted-set spec (see `synced_table`)."""

    @activation_asset
    def _sync(
        context: dg.AssetExecutionContext,
        config: SortedSetSyncConfig,
        warehouse: WarehouseResource,
        redis: RedisResource,
    ) -> Iterator[dg.MaterializeResult]:
        refuse_if_blocking_checks_failed(context, source_key)
        with closing(redis.get_client()) as client, warehouse.connect() as connection:
            result = sync_sorted_sets(
                connection,
                client,
                spec,
                prefix=redis.prefix,
                full=config.mode == "full",
                dry_run=config.dry_run,
                force=config.force,
                max_delete_fraction=config.max_delete_fraction,
                run_id=context.run.run_id,
            )
            keys = [spec.key(value, redis.prefix) for value in first_lists(connection, spec)]
            preview = [] if result.dry_run else [(key, top_members(client, key)) for key in keys]
        log_result(context, result, "list")
        metadata = {**result.metadata(), "rewritten": rewritten(result)}
        if result.dry_run:
            observe_plan(context, metadata, result.samples)
            return
        metadata["dagster/row_count"] = result.added + result.changed + result.unchanged
        metadata["preview"] = dg.MetadataValue.md(markdown_table(["key", "top members"], preview))
        yield dg.MaterializeResult(metadata=metadata)

    description = (
        f"A random sample of the lists in {spec.source} read back from Redis equals the "
        "warehouse, member by member with its score (REDIS_READBACK_SAMPLE lists)."
    )
    return SyncedTable(spec, _sync, readback_check(_sync, description, read_back_lists, spec, name))


def readback_check(
    asset: dg.AssetsDefinition, description: str, compare, spec, asset_name: str
) -> dg.AssetChecksDefinition:
    """The ``readback`` check of a sync asset: ``compare(context, spec, warehouse, redis,
    sample size, asset name)`` reads a sample back and judges it."""

    @dg.asset_check(asset=asset, name=READBACK_CHECK, pool="duckdb", description=description)
    def _readback(
        context: dg.AssetCheckExecutionContext,
        warehouse: WarehouseResource,
        redis: RedisResource,
        rules: ProfileRulesResource,
    ) -> dg.AssetCheckResult:
        return compare(context, spec, warehouse, redis, rules.readback_sample_size, asset_name)

    return _readback


def first_lists(connection, spec: SortedSetSpec) -> list[str | None]:
    rows = connection.execute(
        f"SELECT DISTINCT list FROM ({spec.rows_sql()}) ORDER BY 1 NULLS FIRST LIMIT {PREVIEW_ROWS}"
    ).fetchall()
    return [value for (value,) in rows]


def top_members(client, key: str) -> str:
    """The best members of a list as Redis holds them, with their scores."""
    members = client.zrange(key, 0, PREVIEW_MEMBERS - 1, desc=True, withscores=True)
    return ", ".join(f"{member.decode()} ({score:g})" for member, score in members)


def read_back_lists(
    context: dg.AssetCheckExecutionContext,
    spec: SortedSetSpec,
    warehouse: WarehouseResource,
    redis: RedisResource,
    sample_size: int,
    asset_name: str,
) -> dg.AssetCheckResult:
    with warehouse.connect() as connection:
        sample = connection.execute(
            f"SELECT list FROM (SELECT DISTINCT list FROM ({spec.rows_sql()})) "
            f"USING SAMPLE reservoir({int(sample_size)} ROWS)"
        ).fetchall()
        values = [value for (value,) in sample]
        expected = read_lists(connection, spec, values)
    keys = [spec.key(value, redis.prefix) for value in values]
    with closing(redis.get_client()) as client:
        pipeline = client.pipeline(transaction=False)
        for key in keys:
            pipeline.zrange(key, 0, -1, withscores=True)
        stored_lists = pipeline.execute()
    mismatches = []
    for key, value, got in zip(keys, values, stored_lists, strict=True):
        want = dict(expected[value])
        stored = {member.decode(): score for member, score in got}
        if stored != want:
            missing = len(want.keys() - stored.keys())
            stale = len(stored.keys() - want.keys())
            wrong = sum(stored[m] != s for m, s in want.items() if m in stored)
            mismatches.append((key, missing, stale, wrong))
    return readback_result(
        context,
        sampled=len(keys),
        mismatches=mismatches,
        columns=["key", "missing members", "stale members", "wrong scores"],
        holds="sampled lists equal the warehouse, member by member",
        differs="sampled lists differ from the warehouse",
        asset_name=asset_name,
    )


def log_result(context: dg.AssetExecutionContext, result: SyncResult, unit: str) -> None:
    """The run's counts, why it rewrote everything, and its warnings (``unit``: row, list)."""
    context.log.info(summary(result).replace(" rows in", f" {unit}s in"))
    if result.full_sync_reason:
        context.log.warning(f"Every {unit} rewritten, not only changes: {result.full_sync_reason}")
    for warning in result.warnings:
        context.log.warning(warning)


def observe_plan(
    context: dg.AssetExecutionContext, metadata: dict, samples: dict[str, list[dict]]
) -> None:
    """Record a dry run. A plan is not a materialization: it wrote nothing, so it must not
    look fresh."""
    metadata["plan_samples"] = dg.MetadataValue.json(samples)
    context.log_event(dg.AssetObservation(asset_key=context.asset_key, metadata=metadata))


def summary(result: SyncResult) -> str:
    verb = "Planned" if result.dry_run else "Synced"
    if rewritten(result):
        counts = f"rewritten {rewritten(result)}"
    else:
        counts = f"{result.added} added, {result.changed} changed, {result.unchanged} unchanged"
    return (
        f"{verb} {result.mode}: {counts}, {result.removed} removed, {result.rejected} rejected;"
        f" {result.rows_written} rows in {result.seconds:.2f}s"
    )


def rewritten(result: SyncResult) -> int:
    """Rows a full sync (asked for, or forced by a Redis that lost its data) wrote whatever
    the snapshot said; 0 for an incremental sync."""
    if result.mode != "full" and not result.full_sync_reason:
        return 0
    return result.added + result.changed + result.unchanged


def masked_samples(samples: dict[str, list[dict]]) -> dict[str, list[dict]]:
    return {
        kind: [{**row, "fields": mask_personal(row["fields"])} if "fields" in row else row
               for row in rows]
        for kind, rows in samples.items()
    }  # fmt: skip


def refuse_if_blocking_checks_failed(
    context: dg.AssetExecutionContext, source_key: dg.AssetKey
) -> None:
    """Runs that sync Redis without rebuilding the source table (the verify and reconcile
    schedules) must not publish a table whose latest blocking checks failed: the failed run
    already replaced it, and only its own sync step was skipped."""
    # The whole graph of the code location, not only the run's selection: a verify run
    # selects the sync alone, and the checks it must respect are on the source's asset.
    graph = context.job_def.asset_layer.asset_graph.source_asset_graph
    blocking = sorted(
        (key for key in graph.get_check_keys_for_assets({source_key})
         if graph.get_check_spec(key).blocking),
        key=lambda key: key.name,
    )  # fmt: skip
    failed = []
    for key in blocking:
        evaluation, run_id = latest_check_evaluation(context.instance, key)
        if evaluation is not None and not evaluation.passed:
            failed.append(f"{key.name} (run {run_id})")
    if failed:
        raise dg.Failure(
            description=(
                f"{source_key.to_user_string()} failed {', '.join(failed)}; Redis keeps the last "
                "good rows. Fix the source data (or the rule) and rebuild "
                f"{source_key.to_user_string()} (warehouse_actions_job)"
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


def read_back_preview(connection, client, spec: SyncSpec, redis: RedisResource) -> dg.MetadataValue:
    """The first keys as Redis now holds them: the stored bytes, not our intent."""
    values = connection.execute(
        f"SELECT {spec.key_column} FROM {spec.relation} ORDER BY 1 LIMIT {PREVIEW_ROWS}"
    ).fetchall()
    keys = []
    for (value,) in values:
        try:
            keys.append(spec.key(value, redis.prefix))
        except IdentifyError:
            continue
    rows = [(key, decoded(client.hgetall(key))) for key in keys]
    return dg.MetadataValue.md(markdown_table(["key", "fields"], rows))


def decoded(fields: dict[bytes, bytes]) -> dict[str, object]:
    return mask_personal({name.decode(): value.decode() for name, value in sorted(fields.items())})


def read_back(
    context: dg.AssetCheckExecutionContext,
    spec: SyncSpec,
    warehouse: WarehouseResource,
    redis: RedisResource,
    sample_size: int,
    asset_name: str,
) -> dg.AssetCheckResult:
    columns = list(spec.fields)
    names = [spec.fields[column] for column in columns]
    with warehouse.connect() as connection:
        sample = connection.execute(
            f"SELECT {spec.key_column}, {', '.join(columns)} FROM {spec.relation} "
            f"USING SAMPLE reservoir({int(sample_size)} ROWS)"
        ).fetchall()
    keys, expected = [], []
    for row in sample:
        try:
            fields = identify_fields(traits=dict(zip(names, row[1:], strict=True)))
            keys.append(spec.key(row[0], redis.prefix))
        except IdentifyError:
            continue  # rejected rows are never written, so there is nothing to read back
        expected.append(fields)
    with closing(redis.get_client()) as client:
        pipeline = client.pipeline(transaction=False)
        for key in keys:
            pipeline.hmget(key, names)
        stored_values = pipeline.execute()
    mismatches = []
    for key, want, got in zip(keys, expected, stored_values, strict=True):
        stored = {f: v.decode() for f, v in zip(names, got, strict=True) if v is not None}
        if stored != want:
            mismatches.append((key, mask_personal(want), mask_personal(stored)))
    return readback_result(
        context,
        sampled=len(keys),
        mismatches=mismatches,
        columns=["key", "warehouse", "redis"],
        holds="sampled keys equal the warehouse, field by field",
        differs="sampled keys differ from the warehouse: the product reads wrong or missing values",
        asset_name=asset_name,
    )


def readback_result(
    context: dg.AssetCheckExecutionContext,
    *,
    sampled: int,
    mismatches: list[tuple],
    columns: list[str],
    holds: str,
    differs: str,
    asset_name: str,
) -> dg.AssetCheckResult:
    description = f"{sampled} {holds}"
    if mismatches:
        description = (
            f"{len(mismatches)} of {sampled} {differs}. The next sync repairs a Redis that lost "
            f"its data; run {asset_name} in full mode to repair any other drift"
        )
        context.log.error(description)
    return dg.AssetCheckResult(
        passed=not mismatches,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "sampled": sampled,
            "mismatches": len(mismatches),
            "examples": dg.MetadataValue.md(
                markdown_table(columns, mismatches[:MISMATCH_EXAMPLES])
            ),
        },
    )
