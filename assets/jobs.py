"""Jobs: named selections of assets that sensors, schedules and people launch."""

import dagster as dg

from assets.activation import RECOMMENDATION_SYNCS, profiles
from assets.events import raw_events
from assets.models import product_recommendations
from assets.sources import orders, products

# Everything redis_user_profiles needs, whatever trait sources are registered, except the event
# drain, which events_job runs on its own cadence.
warehouse_actions_job = dg.define_asset_job(
    name="warehouse_actions_job",
    selection=dg.AssetSelection.assets(profiles.asset).upstream()
    - dg.AssetSelection.assets(raw_events),
    description="The profile path: the trait sources -> user_profiles -> Redis.",
)

redis_profiles_job = dg.define_asset_job(
    name="redis_profiles_job",
    selection=[profiles.asset],
    description="Sync Redis from user_profiles without reading the sources (verify, reconcile).",
)

# Every Redis projection, synced from the warehouse as it stands: writes nothing when Redis is in
# sync, repairs a Redis that lost its data, and keeps each synced table inside its freshness
# window while its sources are quiet (a model that did not change is still current).
redis_sync_job = dg.define_asset_job(
    name="redis_sync_job",
    selection=dg.AssetSelection.groups("activation"),
    description=(
        "Sync every table Redis holds (profiles, catalog, recommendation lists) from the "
        "warehouse without rebuilding anything, then read each back (redis_verify_schedule)."
    ),
)

# Run config for a full rewrite. It goes on the run (schedule, launchpad), not on the job: job
# level config would also pin the resources' config and hide test or launch-time overrides.
FULL_SYNC_RUN_CONFIG = profiles.full_sync_run_config()

events_job = dg.define_asset_job(
    name="events_job",
    selection=[raw_events],
    description="Drain the gateway's event streams into raw.events (started by events_sensor).",
)

# The model and its Redis syncs: what a drain of new purchase events needs rebuilt.
RECOMMENDATION_MODEL = [product_recommendations.key, *(s.asset.key for s in RECOMMENDATION_SYNCS)]
RECOMMENDATION_PATH = [products.key, orders.key, *RECOMMENDATION_MODEL]

recommendations_job = dg.define_asset_job(
    name="recommendations_job",
    selection=RECOMMENDATION_PATH,
    description=(
        "The recommendation path: catalog + orders (+ raw.events) -> product_recommendations -> "
        "Redis (product hashes, similar and popular sorted sets)."
    ),
)
