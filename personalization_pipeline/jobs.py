"""Jobs: named selections of assets that sensors, schedules and people launch."""

import dagster as dg

from assets.activation import redis_user_profiles
from assets.sources import income_enrichment, salesforce_contacts
from assets.warehouse import user_profiles

warehouse_actions_job = dg.define_asset_job(
    name="warehouse_actions_job",
    selection=[salesforce_contacts, income_enrichment, user_profiles, redis_user_profiles],
    description="The profile path: Salesforce + income enrichment -> user_profiles -> Redis.",
)

reconcile_job = dg.define_asset_job(
    name="reconcile_job",
    selection=[redis_user_profiles],
    description="Resync Redis from user_profiles; FULL_SYNC_RUN_CONFIG repairs drift.",
)

# Run config for a full rewrite. It goes on the run (schedule, launchpad), not on the job: job
# level config would also pin the resources' config and hide test or launch-time overrides.
FULL_SYNC_RUN_CONFIG = {"ops": {"redis_user_profiles": {"config": {"mode": "full"}}}}
