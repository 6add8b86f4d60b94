"""Schedules. The sensors start a run when a source changed; these keep Redis honest between.

- redis_verify_schedule (every 30 minutes, RUNNING): an incremental sync of every table Redis
  holds (profiles, catalog, recommendation lists) plus their read-back checks. It writes nothing
  when Redis is in sync, repairs what a failed run left behind or a Redis that lost its data,
  and is what keeps each redis_* asset inside its freshness window while the sources are quiet.
  It never reads Salesforce or the files, and never rebuilds a model.
- reconcile_schedule (nightly, RUNNING): the same in full mode, rewriting every profile hash to
  repair drift the snapshot cannot see (a flushed Redis, hand edits, evicted keys).
  Both leave out the syncs of tables never built in this instance (a new deployment, the model
  before the first catalog): those have nothing to repair, and would fail every tick.
- warehouse_actions_schedule (every 30 minutes, STOPPED): for teams that prefer RudderStack's
  fixed cadence to change detection. Turn it on *instead of* the two sensors, not beside them.
"""

import dagster as dg

from assets.jobs import (
    FULL_SYNC_RUN_CONFIG,
    redis_profiles_job,
    redis_sync_job,
    warehouse_actions_job,
)
from personalization_pipeline.settings import current


def schedule_of_what_is_built(
    name: str, job, cron_schedule: str, description: str, run_config: dict | None = None
) -> dg.ScheduleDefinition:
    """A RUNNING schedule of ``job`` that runs only the assets whose upstream tables have been
    built in this instance. A sync of a table that does not exist yet (a new deployment, the
    recommendation model before any catalog arrived) has nothing to verify or repair: run, it
    would fail every tick. When nothing is built the tick is skipped, saying so."""

    @dg.schedule(
        name=name,
        job=job,
        cron_schedule=cron_schedule,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=description,
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        graph = context.repository_def.asset_graph
        built, waiting = [], []
        for key in sorted(job.selection.resolve(graph)):
            parents = graph.get(key).parent_keys
            materialized = all(
                context.instance.get_latest_materialization_event(p) for p in parents
            )
            (built if materialized else waiting).append(key)
        names = ", ".join(key.to_user_string() for key in waiting)
        if waiting:
            context.log.info(f"Left out, their upstream tables were never built: {names}")
        if not built:
            return dg.SkipReason(
                f"Nothing to sync yet: the tables behind {names} were never built here. "
                "Materialize them (their sensors do once their sources arrive) and this "
                "schedule takes them from its next tick."
            )
        return dg.RunRequest(asset_selection=built, run_config=run_config or {})

    return _schedule


redis_verify_schedule = schedule_of_what_is_built(
    "redis_verify_schedule",
    redis_sync_job,
    current().automation.redis_verify_cron,
    "Incremental sync + read-back of everything Redis holds (redis_sync_job): Redis "
    "verified fresh, repaired if it lost its data. Tables never built are left out.",
)

reconcile_schedule = schedule_of_what_is_built(
    "reconcile_schedule",
    redis_profiles_job,
    current().automation.reconcile_cron,
    "Nightly full rewrite of the profile hashes in Redis from user_profiles.",
    FULL_SYNC_RUN_CONFIG,
)

warehouse_actions_schedule = dg.ScheduleDefinition(
    name="warehouse_actions_schedule",
    job=warehouse_actions_job,
    cron_schedule="*/30 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        "The profile path every 30 minutes, whether or not a source changed (RudderStack's "
        "fixed cadence). Turn it on instead of salesforce_contacts_sensor and "
        "income_enrichment_sensor, never beside them: both would start runs for one change."
    ),
)
