"""The one place where assets, checks, jobs, sensors, schedules and resources meet."""

import dagster as dg

from assets import activation, events, models, sources, warehouse
from personalization_pipeline import jobs, schedules, sensors
from personalization_pipeline.settings import resources_from_env

GRAPH = [sources, events, warehouse, models, activation]

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(GRAPH),
    asset_checks=dg.load_asset_checks_from_modules(GRAPH),
    jobs=[
        jobs.warehouse_actions_job,
        jobs.redis_profiles_job,
        jobs.events_job,
        jobs.recommendations_job,
    ],
    sensors=[
        sensors.salesforce_contacts_sensor,
        sensors.income_enrichment_sensor,
        sensors.events_sensor,
        sensors.catalog_files_sensor,
        sensors.recommendations_after_drain_sensor,
    ],
    schedules=[
        schedules.redis_verify_schedule,
        schedules.reconcile_schedule,
        schedules.warehouse_actions_schedule,
    ],
    resources=resources_from_env(),
    # Every step that opens the warehouse is serialized by the `duckdb` pool anyway, so a
    # process per step would only add start-up time (seconds each on a small machine).
    executor=dg.in_process_executor,
)
