"""The one place where assets, checks, jobs, sensors, schedules and resources meet."""

from collections.abc import Sequence
from types import ModuleType

import dagster as dg

from assets import (
    activation,
    events,
    jobs,
    models,
    schedules,
    sensors,
    sources,
    traits,
    warehouse,
)
from personalization_pipeline.resources.configured import resources_from_settings
from personalization_pipeline.settings import current
from personalization_pipeline.traits import discover, expand


def build_definitions(trait_modules: Sequence[ModuleType] = (traits,)) -> dg.Definitions:
    """The whole graph, with user_profiles assembled from the trait sources in `trait_modules`
    (packages stand for their modules): assets/traits by default."""
    trait_sources = discover(*trait_modules)
    profile_sync = activation.profile_sync(trait_sources)
    # The trait modules bring their own assets and checks; sources imported by them are the
    # same objects as in `sources`, which the loader counts once.
    graph = [sources, events, models, *expand(trait_modules)]
    recommendation_syncs = activation.RECOMMENDATION_SYNCS
    return dg.Definitions(
        assets=[
            *dg.load_assets_from_modules(graph),
            warehouse.user_profiles_asset(trait_sources),
            profile_sync.asset,
            *(synced.asset for synced in recommendation_syncs),
        ],
        asset_checks=[
            *dg.load_asset_checks_from_modules([warehouse, *graph]),
            profile_sync.readback,
            *(synced.readback for synced in recommendation_syncs),
        ],
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
        resources=resources_from_settings(current()),
        # Every step that opens the warehouse is serialized by the `duckdb` pool anyway, so a
        # process per step would only add start-up time (seconds each on a small machine).
        executor=dg.in_process_executor,
    )


defs = build_definitions()
