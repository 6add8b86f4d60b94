"""The one place where assets, checks, jobs, sensors, schedules and resources meet.

Everything is collected from the modules of the graph package (`assets/`): an asset, check,
job, sensor, schedule or `SyncedTable` (or a list of them) defined at the top of a module is in
the definitions, so a new module needs no registration here. `user_profiles` and its sync are
the exception: they are built from the trait sources (`assets/traits/`).
"""

from collections.abc import Iterable, Sequence
from types import ModuleType

import dagster as dg

import assets
from assets import activation, traits, warehouse
from personalization_pipeline.resources.configured import resources_from_settings
from personalization_pipeline.settings import current
from personalization_pipeline.synced_tables import SyncedTable
from personalization_pipeline.traits import discover, expand

# What define_asset_job returns; Dagster does not export its class.
ASSET_JOB = type(dg.define_asset_job("_", selection=dg.AssetSelection.all()))
# Checks first: an AssetChecksDefinition is also an AssetsDefinition.
KINDS = {
    "asset_checks": dg.AssetChecksDefinition,
    "assets": dg.AssetsDefinition,
    "jobs": (dg.JobDefinition, ASSET_JOB),
    "sensors": dg.SensorDefinition,
    "schedules": dg.ScheduleDefinition,
}


def build_definitions(
    trait_modules: Sequence[ModuleType] = (traits,), graph: Sequence[ModuleType] = (assets,)
) -> dg.Definitions:
    """The definitions in the `graph` modules, with user_profiles assembled from the trait
    sources in `trait_modules` (packages stand for their modules)."""
    trait_sources = discover(*trait_modules)
    profiles = warehouse.user_profiles_asset(trait_sources)
    profile_sync = activation.profile_sync(trait_sources)
    found = collect([*expand(graph), *expand(trait_modules)])
    # What the graph's modules made for the default trait sources gives way to what was built.
    replaced_assets = {profiles.key, profile_sync.asset.key}
    replaced_checks = set(profile_sync.readback.check_keys)
    return dg.Definitions(
        assets=[
            *(a for a in found["assets"] if replaced_assets.isdisjoint(a.keys)),
            profiles,
            profile_sync.asset,
        ],
        asset_checks=[
            *(c for c in found["asset_checks"] if replaced_checks.isdisjoint(c.check_keys)),
            profile_sync.readback,
        ],
        jobs=found["jobs"],
        sensors=found["sensors"],
        schedules=found["schedules"],
        resources=resources_from_settings(current()),
        # Every step that opens the warehouse is serialized by the `duckdb` pool anyway, so a
        # process per step would only add start-up time (seconds each on a small machine).
        executor=dg.in_process_executor,
    )


def collect(modules: Iterable[ModuleType]) -> dict[str, list]:
    """Each kind of definition found at the top of `modules`, once, in module order."""
    found: dict[str, list] = {kind: [] for kind in KINDS}
    seen: set[int] = set()
    for module in modules:
        for value in vars(module).values():
            for item in value if isinstance(value, list) else [value]:
                parts = [item.asset, item.readback] if isinstance(item, SyncedTable) else [item]
                for part in parts:
                    kind = next((k for k, t in KINDS.items() if isinstance(part, t)), None)
                    if kind and id(part) not in seen:
                        seen.add(id(part))
                        found[kind].append(part)
    return found


defs = build_definitions()
