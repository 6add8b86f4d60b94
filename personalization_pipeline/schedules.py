"""Schedules. Change-driven sensors are the default trigger; these cover the other needs.

- reconcile_schedule (nightly, RUNNING): rewrites every profile hash in full mode, repairing any
  drift in Redis (a flushed node, a hand edit, a key evicted under memory pressure).
- warehouse_actions_schedule (every 30 minutes, STOPPED): for teams that prefer RudderStack's
  fixed cadence to change detection. Turn it on *instead of* the two sensors, not beside them.
"""

import os

import dagster as dg

from personalization_pipeline.jobs import FULL_SYNC_RUN_CONFIG, reconcile_job, warehouse_actions_job

reconcile_schedule = dg.ScheduleDefinition(
    name="reconcile_schedule",
    job=reconcile_job,
    run_config=FULL_SYNC_RUN_CONFIG,
    cron_schedule=os.environ.get("RECONCILE_CRON") or "0 3 * * *",
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
    description="The profile path every 30 minutes, whether or not a source changed.",
)
