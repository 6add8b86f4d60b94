"""Activation: project warehouse models into the Redis keyspace the product reads."""

from collections.abc import Sequence

import dagster as dg

from assets import OWNERS, layer
from assets.models import product_recommendations
from assets.warehouse import TRAIT_SOURCES
from personalization_pipeline.keys import (
    PRODUCT_KEY_TEMPLATE,
    popular_key,
    product_member,
    similar_key,
)
from personalization_pipeline.sync.engine import SyncSpec
from personalization_pipeline.sync.sorted_sets import SortedSetSpec
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

# The recommendation model's keys (keys.py), each built by product_recommendations.
catalog = synced_table(
    SyncSpec(
        name="products",
        source="analytics.product_catalog",
        key_column="sku",
        fields=["name", "category", "price", "member_only", "price_band"],
        key_template=PRODUCT_KEY_TEMPLATE,
    ),
    built_by=product_recommendations,
    owners=OWNERS,
    tags=layer("activation"),
    description="The catalog in Redis as `product:{sku}` hashes, with each product's price band.",
)
similar_products = synced_table(
    SortedSetSpec(
        name="product_similarity",
        source="analytics.product_similarity",
        list_column="sku",
        # What the read path needs of every candidate rides in the member (keys.py).
        member_columns=["neighbour_sku", "category", "price_band", "member_only"],
        score_column="similarity",
        key=similar_key,
        member=product_member,
    ),
    built_by=product_recommendations,
    owners=OWNERS,
    tags=layer("activation"),
    description="Each SKU's nearest neighbours as the sorted set `similar:{sku}`, by similarity.",
)
popular_products = synced_table(
    SortedSetSpec(
        name="popular_products",
        # The overall list has no category: popular_key(None) is `popular`.
        source="""
            SELECT NULL AS category, sku AS neighbour_sku, category AS member_category,
                   price_band, member_only, buyers
            FROM analytics.popular_products
            UNION ALL
            SELECT category, sku, category, price_band, member_only, buyers
            FROM analytics.popular_products_by_category
        """,
        list_column="category",
        member_columns=["neighbour_sku", "member_category", "price_band", "member_only"],
        score_column="buyers",
        key=popular_key,
        member=product_member,
    ),
    built_by=product_recommendations,
    owners=OWNERS,
    tags=layer("activation"),
    description=(
        "The cold-start lists, `popular` and `popular:{category}`, as sorted sets by distinct "
        "buyers."
    ),
)
RECOMMENDATION_SYNCS = [catalog, similar_products, popular_products]
