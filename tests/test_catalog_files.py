"""The product catalog and historical order drops land in raw.products / raw.orders."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from personalization_pipeline.errors import MissingColumnsError, SourceShrankError
from personalization_pipeline.warehouse.catalog import replace_orders, replace_products
from tests.conftest import SAMPLE_DIR


@pytest.fixture
def connection(tmp_path: Path):
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as connection:
        yield connection


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_bundled_sample_lands_whole_and_fits_the_sample_users(connection):
    products = replace_products(connection, SAMPLE_DIR / "products.csv", 0.2)
    orders = replace_orders(connection, SAMPLE_DIR / "orders.csv", 0.2)
    assert (products.rows, products.rejected) == (120, 0)
    assert orders.rejected == 0 and orders.rows > 1000
    # Every ordered SKU is in the catalog, and both example users have orders.
    assert connection.sql(
        "SELECT count(*) FROM raw.orders WHERE sku NOT IN (SELECT sku FROM raw.products)"
    ).fetchone() == (0,)
    per_user = dict(
        connection.sql(
            "SELECT user_id, count(DISTINCT order_id) FROM raw.orders "
            "WHERE user_id IN ('U000001', 'U000002') GROUP BY user_id"
        ).fetchall()
    )
    assert per_user["U000001"] >= 2 and per_user["U000002"] >= 2
    assert (
        connection.sql(
            "SELECT count(*) FILTER (member_only), count(DISTINCT category) FROM raw.products"
        ).fetchone()[1]
        == 6
    )


def test_bad_catalog_lines_are_refused_with_their_reason_and_the_rest_lands(connection, tmp_path):
    path = write(
        tmp_path / "products.csv",
        "sku,name,category,price,member_only,extra\n"
        "SKU-1,Tent,outdoor,199.99,false,x\n"  # line 2: kept
        " ,Blank,outdoor,5,false,x\n"  # line 3: blank sku
        "SKU-3,Cheap,outdoor,abc,false,x\n"  # line 4: price not a number
        "SKU-4,Neg,outdoor,-1,false,x\n"  # line 5: negative price
        "SKU-5,Member,outdoor,10,yes,x\n"  # line 6: member_only neither true nor false
        "SKU-6,Old name,books, 12.50 ,TRUE,x\n"  # line 7: superseded by line 8
        "SKU-6,New name,books,13,false,x\n"  # line 8: kept
        "SKU-7,Nameless,,3,false,x\n",  # line 9: blank category
    )
    load = replace_products(connection, path, 0.2)
    assert (load.rows, load.rejected) == (2, 6)
    assert load.reject_examples == (
        "line 3: sku is blank",
        "line 4: price 'abc' is not a number",
        "line 5: price is negative",
    )
    rows = connection.sql(
        "SELECT sku, name, category, price, member_only, source_line FROM raw.products ORDER BY sku"
    ).fetchall()
    assert [(r[0], r[1], r[2], float(r[3]), r[4], r[5]) for r in rows] == [
        ("SKU-1", "Tent", "outdoor", 199.99, False, 2),
        ("SKU-6", "New name", "books", 13.0, False, 8),
    ]
    rejected = connection.sql(
        "SELECT source_line, reason, line FROM raw.rejected_lines ORDER BY source_line"
    ).fetchall()
    assert [(line, reason) for line, reason, _ in rejected][3:] == [
        (6, "member_only 'yes' is neither true nor false"),
        (7, "sku SKU-6 appears again on line 8, which is kept"),
        (9, "category is blank"),
    ]
    # The refused line's values are kept to repair by hand.
    assert json.loads(rejected[1][2]) == {
        "sku": "SKU-3",
        "name": "Cheap",
        "category": "outdoor",
        "price": "abc",
        "member_only": "false",
    }


def test_bad_order_lines_are_refused_and_a_new_drop_replaces_the_old(connection, tmp_path):
    path = write(
        tmp_path / "orders.csv",
        "order_id,user_id,sku,ordered_at\n"
        "O1,U1,SKU-1,2024-05-01T10:00:00Z\n"
        "O1,U1,SKU-2,2024-05-01T12:00:00+02:00\n"
        "O2,,SKU-1,2024-05-02T10:00:00Z\n"
        "O3,U2,SKU-1,yesterday\n"
        "O4,U2,SKU-3,2024-05-03\n",
    )
    load = replace_orders(connection, path, 0.5)
    assert (load.rows, load.rejected) == (3, 2)
    assert load.reject_examples == (
        "line 4: user_id is blank",
        "line 5: ordered_at 'yesterday' is not a date or timestamp",
    )
    assert connection.sql(
        "SELECT order_id, sku, CAST(ordered_at AS VARCHAR) FROM raw.orders ORDER BY source_line"
    ).fetchall() == [
        ("O1", "SKU-1", "2024-05-01 10:00:00"),
        ("O1", "SKU-2", "2024-05-01 10:00:00"),  # stored in UTC
        ("O4", "SKU-3", "2024-05-03 00:00:00"),
    ]
    write(path, "order_id,user_id,sku,ordered_at\nO9,U9,SKU-9,2024-06-01\nO9,U9,SKU-8,2024-06-01\n")
    load = replace_orders(connection, path, 0.5)
    assert (load.rows, load.rejected, load.previous_rows) == (2, 0, 3)
    assert connection.sql("SELECT DISTINCT order_id FROM raw.orders").fetchall() == [("O9",)]
    assert connection.sql("SELECT count(*) FROM raw.rejected_lines").fetchone() == (0,)


def test_a_truncated_catalog_is_refused_and_the_previous_one_stays(connection, tmp_path):
    header = "sku,name,category,price,member_only\n"
    lines = "".join(f"SKU-{n},P{n},books,{n},false\n" for n in range(10))
    path = write(tmp_path / "products.csv", header + lines)
    replace_products(connection, path, 0.2)
    write(path, header + "SKU-0,P0,books,1,false\n")
    with pytest.raises(SourceShrankError, match="shrank from 10 to 1 rows"):
        replace_products(connection, path, 0.2)
    assert connection.sql("SELECT count(*) FROM raw.products").fetchone() == (10,)


def test_a_missing_file_or_column_names_the_fix(connection, tmp_path):
    with pytest.raises(FileNotFoundError, match="set PRODUCTS_PATH"):
        replace_products(connection, tmp_path / "nope.csv", 0.2)
    path = write(tmp_path / "orders.csv", "order_id,user_id,sku\nO1,U1,SKU-1\n")
    with pytest.raises(MissingColumnsError, match="missing required column"):
        replace_orders(connection, path, 0.2)
