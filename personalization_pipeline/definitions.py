"""The one place where assets, jobs and resources meet."""

import dagster as dg

from assets import activation, sources, warehouse
from personalization_pipeline.jobs import warehouse_actions_job
from personalization_pipeline.settings import resources_from_env

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([sources, warehouse, activation]),
    jobs=[warehouse_actions_job],
    resources=resources_from_env(),
)
