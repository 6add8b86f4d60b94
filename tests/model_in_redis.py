"""Put the recommendation model's tables into Redis with the pipeline's own syncs.

The specs are the graph's (assets/activation.py: the ones redis_products,
redis_product_similarity and redis_popular_products run), synced by the same engines, so the
read path's tests read exactly what production writes.
"""

from __future__ import annotations

from typing import Any

import duckdb

from assets.activation import RECOMMENDATION_SYNCS
from personalization_pipeline.sync.engine import sync_table
from personalization_pipeline.sync.sorted_sets import SortedSetSpec, sync_sorted_sets


def model_to_redis(client: Any, connection: duckdb.DuckDBPyConnection, prefix: str = "") -> None:
    for synced in RECOMMENDATION_SYNCS:
        if isinstance(synced.spec, SortedSetSpec):
            sync_sorted_sets(connection, client, synced.spec, prefix=prefix)
        else:
            sync_table(connection, client, synced.spec, prefix=prefix)
