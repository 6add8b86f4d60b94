"""Activation: project warehouse models into the Redis keyspace the product reads."""

from collections.abc import Sequence

import dagster as dg

from assets import OWNERS, layer
from assets.warehouse import TRAIT_SOURCES
from personalization_pipeline.sync.engine import SyncSpec
from personalization_pipeline.synced_tables import SyncedTable, synced_table
from personalization_pipeline.traits import TraitSource
from personalization_pipeline.warehouse.profiles import USER_PROFILES_TABLE


def profile_sync(sources: Sequence[TraitSource]) -> SyncedTable:
    """user_profiles into `user:{userId}` hashes: every trait of every source is a field."""
    traits = [trait for source in sources for trait in source.trait_columns.values()]
    return synced_table(
        SyncSpec(
            name="user_profiles", source=USER_PROFILES_TABLE, key_column="user_id", fields=traits
        ),
        built_by=dg.AssetKey("user_profiles"),
        owners=OWNERS,
        tags=layer("activation", personal_data=True),
        description=(
            "Profiles in Redis as `user:{userId}` hashes, byte-identical to what RudderStack's "
            f"Redis destination writes for an identify with these traits: {', '.join(traits)}."
        ),
    )


profiles = profile_sync(TRAIT_SOURCES)
redis_user_profiles = profiles.asset
redis_user_profiles_readback = profiles.readback
PROFILE_SYNC = profiles.spec
