"""Put the recommendation model's tables into Redis as keys.py lays them out.

A stand-in for the engine-based sync of these tables (through the sync factory, to come):
it writes every key once, pipelined, and nothing more.
"""

from __future__ import annotations

from typing import Any

import duckdb

from personalization_pipeline.keys import (
    popular_key,
    product_key,
    product_member,
    similar_key,
)


def model_to_redis(client: Any, connection: duckdb.DuckDBPyConnection, prefix: str = "") -> None:
    pipe = client.pipeline(transaction=False)
    # (sorted set, member's SKU, score, member's attributes) for every list.
    lists = connection.sql(
        """
        SELECT 'similar', sku, neighbour_sku, similarity, category, price_band, member_only
        FROM analytics.product_similarity
        UNION ALL
        SELECT 'popular', NULL, sku, buyers, category, price_band, member_only
        FROM analytics.popular_products
        UNION ALL
        SELECT 'popular', category, sku, buyers, category, price_band, member_only
        FROM analytics.popular_products_by_category
        """
    ).fetchall()
    for kind, name, sku, score, category, band, member_only in lists:
        key = similar_key(name, prefix) if kind == "similar" else popular_key(name, prefix)
        pipe.zadd(key, {product_member(sku, category, band, member_only): score})
    for sku, name, category, price, member_only, band in connection.sql(
        "SELECT sku, name, category, price, member_only, price_band FROM analytics.product_catalog"
    ).fetchall():
        fields = {"name": name, "category": category, "price": str(price), "price_band": band}
        fields["member_only"] = str(member_only).lower()
        pipe.hset(product_key(sku, prefix), mapping={k: v for k, v in fields.items() if v})
    pipe.execute()
