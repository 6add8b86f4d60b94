"""Schedules. The sensors start a run when a source changed; these keep Redis honest between.

- redis_verify_schedule (every 30 minutes, RUNNING): an incremental sync of every table Redis
  holds (profiles, catalog, recommendation lists) plus their read-back checks. It writes nothing
  when Redis is in sync, repairs what a failed run left behind or a Redis that lost its data,
  and is what keeps each redis_* asset inside its freshness window while the sources are quiet.
  It never reads Salesforce or the files, and never rebuilds a model.
- reconcile_schedule (nightly, RUNNING): the same in full mode, rewriting every profile hash to
  repair drift the snapshot cannot see (a flushed Redis, hand edits, evicted keys).
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

redis_verify_schedule = dg.ScheduleDefinition(
    name="redis_verify_schedule",
    job=redis_sync_job,
    cron_schedule=current().automation.redis_verify_cron,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Incremental sync + read-back of everything Redis holds (redis_sync_job): Redis "
        "verified fresh, repaired if it lost its data."
    ),
)

reconcile_schedule = dg.ScheduleDefinition(
    name="reconcile_schedule",
    job=redis_profiles_job,
    run_config=FULL_SYNC_RUN_CONFIG,
    cron_schedule=current().automation.reconcile_cron,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly full rewrite of the profile hashes in Redis from user_profiles.",
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
