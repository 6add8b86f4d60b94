"""Activation: project warehouse models into the Redis keyspace the product reads."""

from assets.warehouse import user_profiles
from personalization_pipeline.sync.engine import SyncSpec
from personalization_pipeline.synced_tables import synced_table

PROFILE_TRAITS = ["email", "membership_status", "income_bracket"]

profiles = synced_table(
    SyncSpec(
        name="user_profiles",
        source="analytics.user_profiles",
        key_column="user_id",
        fields=PROFILE_TRAITS,
    ),
    built_by=user_profiles,
    description=(
        "Profiles in Redis as `user:<userId>` hashes, byte-identical to what RudderStack's "
        "Redis destination writes for an identify with these traits."
    ),
)
redis_user_profiles = profiles.asset
redis_user_profiles_readback = profiles.readback
PROFILE_SYNC = profiles.spec
