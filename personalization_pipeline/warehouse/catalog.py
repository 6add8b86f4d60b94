"""Land the product catalog and the historical orders (CSV drops) in raw.products and raw.orders.

Each drop is a full file and replaces the table. Lines that cannot land (a blank SKU, a price
that is not a number, a date that is not one) are refused with the reason into
raw.rejected_lines and the valid rest lands: one bad line must not hide a whole catalog. A
file that is unreadable as CSV (warehouse/csv_files.py) fails with the line and column to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from personalization_pipeline.errors import SourceShrankError, require_columns
from personalization_pipeline.warehouse.csv_files import csv_header, csv_pages
from personalization_pipeline.warehouse.guards import shrink_guard
from personalization_pipeline.warehouse.schema import ensure_schema
from personalization_pipeline.warehouse.transaction import transaction

__all__ = ["ORDERS", "PRODUCTS", "CsvDrop", "DropLoad", "replace_orders", "replace_products"]

PAGE_SIZE = 50_000
REJECT_EXAMPLES = 3


@dataclass(frozen=True)
class CsvDrop:
    """What a CSV drop must hold and how its lines become rows of ``table``."""

    table: str
    what: str  # for messages: "product catalog"
    setting: str  # the environment variable naming the file
    columns: tuple[str, ...]  # required in the header; others are ignored
    reasons: str  # SQL CASE arms over the text columns: why a line cannot land
    values: str  # SQL select list of the table's own columns, from the text columns


PRODUCTS = CsvDrop(
    table="raw.products",
    what="product catalog",
    setting="PRODUCTS_PATH",
    columns=("sku", "name", "category", "price", "member_only"),
    reasons="""
        WHEN trim(sku) = '' THEN 'sku is blank'
        WHEN trim(category) = '' THEN 'category is blank'
        WHEN TRY_CAST(trim(price) AS DECIMAL(12, 2)) IS NULL
            THEN 'price ''' || price || ''' is not a number'
        WHEN TRY_CAST(trim(price) AS DECIMAL(12, 2)) < 0 THEN 'price is negative'
        WHEN lower(trim(member_only)) NOT IN ('true', 'false')
            THEN 'member_only ''' || member_only || ''' is neither true nor false'
    """,
    values="""
        trim(sku), nullif(trim(name), ''), trim(category),
        CAST(trim(price) AS DECIMAL(12, 2)), lower(trim(member_only)) = 'true'
    """,
)

ORDERS = CsvDrop(
    table="raw.orders",
    what="historical orders",
    setting="ORDERS_PATH",
    columns=("order_id", "user_id", "sku", "ordered_at"),
    reasons="""
        WHEN trim(order_id) = '' THEN 'order_id is blank'
        WHEN trim(user_id) = '' THEN 'user_id is blank'
        WHEN trim(sku) = '' THEN 'sku is blank'
        WHEN TRY_CAST(trim(ordered_at) AS TIMESTAMPTZ) IS NULL
            THEN 'ordered_at ''' || ordered_at || ''' is not a date or timestamp'
    """,
    values="""
        trim(order_id), trim(user_id), trim(sku),
        CAST(trim(ordered_at) AS TIMESTAMPTZ) AT TIME ZONE 'UTC'
    """,
)

# One SKU on several lines of a catalog: the last line is the vendor's last word; the earlier
# ones are refused, naming the line that was kept.
PRODUCT_DUPLICATES = """
CREATE OR REPLACE TEMP TABLE product_duplicates AS
SELECT source_line, sku, kept_line, source_file,
       json_object('sku', sku, 'name', name, 'category', category, 'price', price,
                   'member_only', member_only) AS line
FROM (SELECT *, max(source_line) OVER (PARTITION BY sku) AS kept_line FROM raw.products)
WHERE source_line < kept_line;
INSERT INTO raw.rejected_lines
SELECT 'raw.products', source_file, source_line,
       'sku ' || sku || ' appears again on line ' || kept_line || ', which is kept', line,
       now() AT TIME ZONE 'UTC'
FROM product_duplicates;
DELETE FROM raw.products WHERE source_line IN (SELECT source_line FROM product_duplicates);
DROP TABLE product_duplicates;
"""


@dataclass(frozen=True)
class DropLoad:
    rows: int
    rejected: int
    previous_rows: int | None
    reject_examples: tuple[str, ...] = ()


def replace_products(
    connection: duckdb.DuckDBPyConnection, path: str | Path, max_shrink_fraction: float
) -> DropLoad:
    """Replace raw.products with the catalog file's valid lines (see the module docstring)."""
    return _replace(connection, PRODUCTS, Path(path), max_shrink_fraction, PRODUCT_DUPLICATES)


def replace_orders(
    connection: duckdb.DuckDBPyConnection, path: str | Path, max_shrink_fraction: float
) -> DropLoad:
    """Replace raw.orders with the order file's valid lines, one row per line item."""
    return _replace(connection, ORDERS, Path(path), max_shrink_fraction)


def _replace(
    connection: duckdb.DuckDBPyConnection,
    drop: CsvDrop,
    path: Path,
    max_shrink_fraction: float,
    finish: str | None = None,
) -> DropLoad:
    """A drop that is empty or lost more than ``max_shrink_fraction`` of the last good one's
    rows (a truncated file) is refused and the previous drop stays."""
    if not path.is_file():
        raise FileNotFoundError(
            f"The {drop.what} file {path} does not exist: set {drop.setting} to the file "
            "your export drops"
        )
    ensure_schema(connection)
    require_columns(str(path), csv_header(path), drop.columns)
    with transaction(connection):
        connection.execute(f"DELETE FROM {drop.table}")
        connection.execute("DELETE FROM raw.rejected_lines WHERE table_name = ?", [drop.table])
        for frame in csv_pages(path, PAGE_SIZE):
            first = frame.attrs["first_line"]
            page = frame[list(drop.columns)].assign(source_line=range(first, first + len(frame)))
            connection.register("drop_page", page)
            _land_page(connection, drop, path)
            connection.unregister("drop_page")
        if finish:
            connection.execute(finish)
        verdict = shrink_guard(connection, drop.table, max_shrink_fraction)
        if not verdict.passed:
            raise SourceShrankError(
                f"{path}: {verdict.explain(drop.table, max_shrink_fraction)}; {drop.table} keeps "
                "the previous drop. If the rows really left, raise PROFILE_MAX_SHRINK for one run"
            )
    (rejected,) = connection.execute(
        "SELECT count(*) FROM raw.rejected_lines WHERE table_name = ?", [drop.table]
    ).fetchone()
    examples = connection.execute(
        "SELECT 'line ' || source_line || ': ' || reason FROM raw.rejected_lines "
        "WHERE table_name = ? ORDER BY source_line LIMIT ?",
        [drop.table, REJECT_EXAMPLES],
    ).fetchall()
    return DropLoad(
        rows=verdict.rows,
        rejected=rejected,
        previous_rows=verdict.baseline,
        reject_examples=tuple(example for (example,) in examples),
    )


def _land_page(connection: duckdb.DuckDBPyConnection, drop: CsvDrop, path: Path) -> None:
    line = ", ".join(f"'{column}', {column}" for column in drop.columns)
    connection.execute(
        "CREATE OR REPLACE TEMP TABLE drop_checked AS "
        f"SELECT *, CASE {drop.reasons} END AS reason FROM drop_page"
    )
    connection.execute(
        f"""
        INSERT INTO {drop.table}
        SELECT {drop.values}, ?, now() AT TIME ZONE 'UTC', source_line
        FROM drop_checked WHERE reason IS NULL
        """,
        [str(path)],
    )
    connection.execute(
        f"""
        INSERT INTO raw.rejected_lines
        SELECT ?, ?, source_line, reason, json_object({line}), now() AT TIME ZONE 'UTC'
        FROM drop_checked WHERE reason IS NOT NULL
        """,
        [drop.table, str(path)],
    )
    connection.execute("DROP TABLE drop_checked")
