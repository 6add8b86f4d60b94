"""Activation: project warehouse models into the Redis keyspace the product reads."""

from assets.models import product_recommendations
from assets.warehouse import user_profiles
from personalization_pipeline.keys import (
    PRODUCT_KEY_TEMPLATE,
    popular_key,
    product_member,
    similar_key,
)
from personalization_pipeline.sync.engine import SyncSpec
from personalization_pipeline.sync.sorted_sets import SortedSetSpec
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

catalog = synced_table(
    SyncSpec(
        name="products",
        source="analytics.product_catalog",
        key_column="sku",
        fields=["name", "category", "price", "member_only", "price_band"],
        key_template=PRODUCT_KEY_TEMPLATE,
    ),
    built_by=product_recommendations,
    description="The catalog in Redis as `product:<sku>` hashes, with each product's price band.",
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
    description="Each SKU's nearest neighbours as the sorted set `similar:<sku>`, by similarity.",
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
    description=(
        "The cold-start lists, `popular` and `popular:<category>`, as sorted sets by distinct "
        "buyers."
    ),
)
redis_products = catalog.asset
redis_products_readback = catalog.readback
redis_product_similarity = similar_products.asset
redis_product_similarity_readback = similar_products.readback
redis_popular_products = popular_products.asset
redis_popular_products_readback = popular_products.readback
RECOMMENDATION_SYNCS = [catalog, similar_products, popular_products]
