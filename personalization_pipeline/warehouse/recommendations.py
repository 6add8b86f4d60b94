"""Build the recommendation model in the warehouse: the SQL files beside the assets, in order.

``assets/sql/purchase_history.sql`` gathers purchases (raw.events and raw.orders) under the
self-join guards into the connection's temp tables; ``product_catalog.sql`` prices the catalog
into bands; ``product_similarity.sql`` and ``popular_products.sql`` build the tables the read
path's Redis keys are synced from (keys.py): analytics.product_similarity,
analytics.popular_products, analytics.popular_products_by_category, and
analytics.product_catalog.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb

from personalization_pipeline.warehouse.schema import ensure_schema
from personalization_pipeline.warehouse.transaction import transaction

__all__ = ["MODEL_FILES", "ModelBuild", "ModelSettings", "build_recommendations"]

HISTORY_FILE = "purchase_history.sql"
TABLE_FILES = ("product_catalog.sql", "product_similarity.sql", "popular_products.sql")
# Every file the model is built from, in the order they run.
MODEL_FILES = (HISTORY_FILE, *TABLE_FILES)


@dataclass(frozen=True)
class ModelSettings:
    """The model's knobs; each is a variable the SQL reads with getvariable()."""

    top_k: int = 20  # neighbours kept per SKU
    min_co_buyers: int = 2  # fewer shared buyers is chance, not similarity
    max_items_per_order: int = 50  # larger orders are left out (wholesale, tests)
    max_items_per_user: int = 100  # a buyer's most recent distinct SKUs only
    popular_n: int = 100  # products in each popular list
    price_bands: int = 5  # as many as income brackets (level_1 .. level_5)
    purchase_events: tuple[str, ...] = ("Order Completed",)


@dataclass(frozen=True)
class ModelBuild:
    purchase_lines: int
    orders_over_cap: int  # orders left out for holding more than max_items_per_order SKUs
    buyers_over_cap: int  # buyers whose oldest SKUs were left out (max_items_per_user)
    skus_with_neighbours: int
    neighbour_rows: int
    popular_rows: int


def build_recommendations(
    connection: duckdb.DuckDBPyConnection, sql_dir: Path, settings: ModelSettings
) -> ModelBuild:
    """Rebuild the model's tables from raw.products, raw.orders and raw.events, atomically."""
    ensure_schema(connection)
    for name, value in asdict(settings).items():
        connection.execute(
            f"SET VARIABLE {name} = ?", [list(value) if isinstance(value, tuple) else value]
        )
    # The history is only temp tables, private to this connection, so it needs no transaction;
    # and it must not be in one: DuckDB plans over tables created in the open transaction
    # without their statistics (no compressed join and group keys), which made the self-join
    # about twice as slow. The shared tables are replaced together.
    connection.execute((sql_dir / HISTORY_FILE).read_text())
    with transaction(connection):
        for name in TABLE_FILES:
            connection.execute((sql_dir / name).read_text())
        counts = connection.execute(
            """
            SELECT (SELECT count(*) FROM purchase_lines),
                   (SELECT count(*) FROM orders_over_cap),
                   (SELECT count(DISTINCT buyer_id) FROM buyer_item_ids
                    WHERE distinct_skus > getvariable('max_items_per_user')),
                   (SELECT count(DISTINCT sku) FROM analytics.product_similarity),
                   (SELECT count(*) FROM analytics.product_similarity),
                   (SELECT count(*) FROM analytics.popular_products)
                       + (SELECT count(*) FROM analytics.popular_products_by_category)
            """
        ).fetchone()
    return ModelBuild(*counts)
