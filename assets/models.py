"""Models: the product recommendation model, built in warehouse SQL from purchase history."""

import hashlib
from dataclasses import asdict
from pathlib import Path

import dagster as dg
import duckdb

from assets import OWNERS, layer
from assets.events import raw_events
from assets.sources import orders, products
from personalization_pipeline.metadata import column_schema, markdown_table
from personalization_pipeline.resources.catalog import ModelSettingsResource
from personalization_pipeline.resources.warehouse import WarehouseResource
from personalization_pipeline.warehouse.recommendations import MODEL_FILES, build_recommendations
from personalization_pipeline.warehouse.tables import PRODUCT_SIMILARITY

SQL_DIR = Path(__file__).parent / "sql"
# The model is its SQL: a changed query is a new code version, which the UI flags.
MODEL_CODE_VERSION = hashlib.sha256(
    b"".join((SQL_DIR / name).read_bytes() for name in MODEL_FILES)
).hexdigest()[:12]
CHECK_EXAMPLES = 5

RECOMMENDED_IN_CATALOG = "recommended_skus_in_catalog"
SUPPORTED_HAVE_NEIGHBOURS = "supported_products_have_neighbours"

# Computed inside the asset's step: the second needs the purchase history the build leaves in
# its connection's temp tables (purchase_history.sql, after the self-join guards). Blocking:
# while one fails, the Redis syncs of the model refuse to publish it (synced_tables.py).
MODEL_CHECKS = [
    dg.AssetCheckSpec(
        RECOMMENDED_IN_CATALOG,
        asset="product_recommendations",
        blocking=True,
        description=(
            "Every SKU the model recommends (neighbours, popular lists) is in raw.products. A "
            "product no longer sold may still have neighbours: its buyers are still a reason."
        ),
    ),
    dg.AssetCheckSpec(
        SUPPORTED_HAVE_NEIGHBOURS,
        asset="product_recommendations",
        blocking=True,
        description=(
            "Every SKU with at least MODEL_MIN_CO_BUYERS co-buyers shared with some catalog "
            "product (in the guarded purchase history) has a non-empty neighbour list."
        ),
    ),
]


@dg.asset(
    group_name="models",
    kinds={"duckdb"},
    owners=OWNERS,
    tags=layer("model"),
    pool="duckdb",
    deps=[raw_events, products, orders],
    code_version=MODEL_CODE_VERSION,
    check_specs=MODEL_CHECKS,
    metadata=column_schema(PRODUCT_SIMILARITY),
)
def product_recommendations(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, model: ModelSettingsResource
):
    """Similar products (co-purchase cosine, top MODEL_TOP_K) and popular products per category."""
    settings = model.model_settings()
    with warehouse.connect() as connection:
        build = build_recommendations(connection, SQL_DIR, settings)
        yield recommended_in_catalog(connection)
        yield supported_have_neighbours(connection)
    context.log.info(
        f"{build.skus_with_neighbours} SKUs have neighbours ({build.neighbour_rows} rows), "
        f"{build.popular_rows} popular-list rows, from {build.purchase_lines} purchase lines"
    )
    if build.orders_over_cap or build.buyers_over_cap:
        context.log.warning(
            f"{build.orders_over_cap} orders were left out for holding more than "
            f"{settings.max_items_per_order} SKUs and {build.buyers_over_cap} buyers kept only "
            f"their {settings.max_items_per_user} most recent SKUs (MODEL_MAX_ITEMS_PER_ORDER, "
            "MODEL_MAX_ITEMS_PER_USER)"
        )
    yield dg.MaterializeResult(
        metadata={
            **asdict(build),
            "dagster/row_count": build.neighbour_rows,
            "settings": dg.MetadataValue.json(
                {**asdict(settings), "purchase_events": list(settings.purchase_events)}
            ),
        }
    )


def recommended_in_catalog(connection: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
    rows = connection.execute(
        """
        SELECT sku, list(DISTINCT source ORDER BY source) AS found_in
        FROM (SELECT neighbour_sku AS sku, 'product_similarity' AS source
              FROM analytics.product_similarity
              UNION ALL SELECT sku, 'popular_products' FROM analytics.popular_products
              UNION ALL SELECT sku, 'popular_products_by_category'
              FROM analytics.popular_products_by_category)
        WHERE sku NOT IN (SELECT sku FROM raw.products)
        GROUP BY sku ORDER BY sku
        """
    ).fetchall()
    return check_result(
        RECOMMENDED_IN_CATALOG,
        rows,
        "every recommended SKU is in the catalog",
        "recommended SKUs are not in raw.products",
        ["sku", "found in"],
    )


def supported_have_neighbours(connection: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
    rows = connection.execute(
        """
        -- The build's integer ids, each pair once (lower id first), then both ways: the same
        -- pair count the model makes, at a third of the cost of joining the string SKUs.
        WITH pairs AS (
            SELECT a.sku_id AS low_id, b.sku_id AS high_id, count(*) AS co_buyers
            FROM buyer_item_ids AS a
            JOIN buyer_item_ids AS b ON a.buyer_id = b.buyer_id AND a.sku_id < b.sku_id
            GROUP BY ALL HAVING count(*) >= getvariable('min_co_buyers')
        ),
        both_ways AS (
            SELECT low_id AS sku_id, high_id AS other_id, co_buyers FROM pairs
            UNION ALL SELECT high_id, low_id, co_buyers FROM pairs
        )
        SELECT anchor.sku, max(both_ways.co_buyers) AS most_co_buyers
        FROM both_ways
        JOIN skus AS anchor USING (sku_id)
        JOIN skus AS other ON other.sku_id = both_ways.other_id
        WHERE other.in_catalog
          AND anchor.sku NOT IN (SELECT sku FROM analytics.product_similarity)
        GROUP BY anchor.sku ORDER BY anchor.sku
        """
    ).fetchall()
    return check_result(
        SUPPORTED_HAVE_NEIGHBOURS,
        rows,
        "every SKU with enough co-buyers has neighbours",
        "SKUs with enough co-buyers have no neighbours",
        ["sku", "most co-buyers with one product"],
    )


def check_result(
    name: str, rows: list[tuple], rule: str, what: str, columns: list[str]
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=not rows,
        description=f"{len(rows)} {what}" if rows else f"Holds: {rule}",
        metadata={
            "violations": len(rows),
            "examples": dg.MetadataValue.md(markdown_table(columns, rows[:CHECK_EXAMPLES])),
        },
    )
