"""The recommendation model's SQL on a toy basket set whose similarities are worked out by hand."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from math import sqrt
from pathlib import Path

import duckdb
import pytest

from personalization_pipeline.warehouse.catalog import replace_orders, replace_products
from personalization_pipeline.warehouse.recommendations import (
    ModelSettings,
    build_recommendations,
)
from personalization_pipeline.warehouse.schema import ensure_schema
from personalization_pipeline.warehouse.tables import PRODUCT_SIMILARITY
from tests.conftest import REPO_ROOT, SAMPLE_DIR

SQL_DIR = REPO_ROOT / "assets" / "sql"
T0 = datetime(2024, 5, 1)

# (order, buyer, skus, days after T0)
ORDERS = [
    ("O1", "u1", "AB", 0),
    ("O2", "u1", "C", 1),  # a later order of the same buyer still co-purchases with A and B
    ("O3", "u2", "AB", 0),
    ("O4", "u3", "AC", 0),
    ("O5", "u4", "BD", 0),
    ("O6", "u8", "ABCDEF", 0),  # 6 SKUs > max_items_per_order 5: left out whole
    ("O7", "u9", "CD", 1),  # u9's oldest: beyond max_items_per_user 3, left out
    ("O8", "u9", "EF", 2),
    ("O9", "u9", "A", 3),
]
# D is not in the catalog (discontinued): never a neighbour, still an anchor.
CATALOG = [("A", "outdoor", 10), ("B", "outdoor", 20), ("C", "books", 5), ("E", "books", 5)]
CATALOG += [("F", "kitchen", 7)]


def purchase(message_id: str, payload: dict, event: str = "Order Completed") -> tuple:
    payload = {"type": "track", "event": event, "messageId": message_id, **payload}
    return (
        message_id,
        "track",
        event,
        payload.get("userId"),
        payload.get("anonymousId"),
        T0,
        T0,
        T0,
        "events:0",
        "0-1",
        json.dumps(payload),
    )


EVENTS = [
    # u5 buys A and B (and an integer SKU 7, not in the catalog) through the gateway.
    purchase(
        "e1", {"userId": "u5", "properties": {"products": [{"sku": "A"}, {"sku": "B"}, {"sku": 7}]}}
    ),
    # An anonymous buyer: B then D, in two purchases with properties.sku.
    purchase("e2", {"anonymousId": "anon1", "properties": {"sku": "B"}}),
    purchase("e3", {"anonymousId": "anon1", "properties": {"sku": "D"}}),
    # Not purchases: a view, and a purchase name not in purchase_events.
    purchase("e4", {"userId": "u6", "properties": {"sku": "C"}}, event="Product Viewed"),
    purchase("e5", {"userId": "u6", "properties": {"sku": "E"}}, event="Refund"),
]

SETTINGS = ModelSettings(
    top_k=20, min_co_buyers=2, max_items_per_order=5, max_items_per_user=3, popular_n=2
)


def load_toy(connection: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    products = tmp_path / "products.csv"
    products.write_text(
        "sku,name,category,price,member_only\n"
        + "".join(f"{sku},{sku},{category},{price},false\n" for sku, category, price in CATALOG)
    )
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "order_id,user_id,sku,ordered_at\n"
        + "".join(
            f"{order},{buyer},{sku},{(T0 + timedelta(days=day)).isoformat()}Z\n"
            for order, buyer, skus, day in ORDERS
            for sku in skus
        )
    )
    replace_products(connection, products, 0.2)
    replace_orders(connection, orders, 0.2)
    ensure_schema(connection)
    connection.executemany(
        "INSERT INTO raw.events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", EVENTS
    )


@pytest.fixture
def connection(tmp_path: Path):
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as connection:
        yield connection


def neighbours(connection: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    found: dict[str, list[tuple]] = {}
    for sku, rank, neighbour, similarity, co_buyers in connection.sql(
        "SELECT sku, rank, neighbour_sku, similarity, co_buyers FROM analytics.product_similarity"
    ).fetchall():
        found.setdefault(sku, []).append((rank, neighbour, round(similarity, 6), co_buyers))
    return found


def test_cosine_similarity_over_buyers_with_support_and_both_caps(connection, tmp_path):
    load_toy(connection, tmp_path)
    build = build_recommendations(connection, SQL_DIR, SETTINGS)
    # By hand. Buyers after the caps (u8's order is out, u9 keeps A, E, F):
    #   u1 ABC, u2 AB, u3 AC, u4 BD, u5 AB7, anon1 BD, u9 AEF
    # buyers: A 5 (u1 u2 u3 u5 u9), B 5 (u1 u2 u4 u5 anon1), C 2, D 2, E 1, F 1, 7 1
    # co-buyers >= 2: A-B 3 (u1 u2 u5), A-C 2 (u1 u3), B-D 2 (u4 anon1); B-C, A-E, E-F... 1.
    ab, ac, bd = 3 / sqrt(5 * 5), 2 / sqrt(5 * 2), 2 / sqrt(5 * 2)
    assert neighbours(connection) == {
        "A": [(1, "C", round(ac, 6), 2), (2, "B", round(ab, 6), 3)],
        "B": [(1, "A", round(ab, 6), 3)],  # D is not in the catalog
        "C": [(1, "A", round(ac, 6), 2)],
        "D": [(1, "B", round(bd, 6), 2)],  # a discontinued SKU still has neighbours
    }
    assert (build.orders_over_cap, build.buyers_over_cap) == (1, 1)
    assert (build.skus_with_neighbours, build.neighbour_rows) == (4, 5)
    # Each neighbour row carries what the read path's rules need, from the catalog.
    assert connection.sql(
        "SELECT category, price_band, member_only FROM analytics.product_similarity "
        "WHERE sku = 'A' AND neighbour_sku = 'B'"
    ).fetchone() == ("outdoor", 5, False)


def test_top_k_and_minimum_support_are_settings(connection, tmp_path):
    load_toy(connection, tmp_path)
    build_recommendations(
        connection, SQL_DIR, ModelSettings(top_k=1, min_co_buyers=3, max_items_per_order=5,
                                           max_items_per_user=3)
    )  # fmt: skip
    # Only A-B has 3 co-buyers; top 1 of each.
    assert {sku: [n[1] for n in found] for sku, found in neighbours(connection).items()} == {
        "A": ["B"],
        "B": ["A"],
    }


def test_popular_lists_overall_and_per_category(connection, tmp_path):
    load_toy(connection, tmp_path)
    build_recommendations(connection, SQL_DIR, SETTINGS)
    # Catalog products by distinct buyers: A 5, B 5, C 2, E 1, F 1 (ties by SKU; D is not sold).
    assert connection.sql(
        "SELECT rank, sku, buyers, category FROM analytics.popular_products"
    ).fetchall() == [(1, "A", 5, "outdoor"), (2, "B", 5, "outdoor")]
    assert connection.sql(
        "SELECT category, rank, sku, buyers FROM analytics.popular_products_by_category"
    ).fetchall() == [
        ("books", 1, "C", 2, ),
        ("books", 2, "E", 1),
        ("kitchen", 1, "F", 1),
        ("outdoor", 1, "A", 5),
        ("outdoor", 2, "B", 5),
    ]  # fmt: skip


def test_price_bands_rank_prices_within_each_category(connection, tmp_path):
    load_toy(connection, tmp_path)
    build_recommendations(connection, SQL_DIR, SETTINGS)
    # outdoor 10 < 20: cume_dist 0.5, 1 -> bands ceil(2.5) = 3, 5; books: 5 = 5 share band 5.
    assert dict(
        connection.sql("SELECT sku, price_band FROM analytics.product_catalog").fetchall()
    ) == {"A": 3, "B": 5, "C": 5, "E": 5, "F": 5}


def test_the_bundled_sample_builds_a_model_of_catalog_products(connection):
    replace_products(connection, SAMPLE_DIR / "products.csv", 0.2)
    replace_orders(connection, SAMPLE_DIR / "orders.csv", 0.2)
    build = build_recommendations(connection, SQL_DIR, ModelSettings())
    assert build.skus_with_neighbours == 120
    assert connection.sql(
        """
        SELECT max(rank), count(*) FILTER (neighbour_sku NOT IN (SELECT sku FROM raw.products)),
               min(similarity) > 0 AND max(similarity) <= 1
        FROM analytics.product_similarity
        """
    ).fetchone() == (20, 0, True)
    # The column schema the model asset shows is what the SQL builds.
    built = connection.execute(f"DESCRIBE {PRODUCT_SIMILARITY.name}").fetchall()
    assert [(name, kind) for name, kind, *_ in built] == [
        (column.name, column.type) for column in PRODUCT_SIMILARITY.columns
    ]


def reference_neighbours(
    orders: list[tuple[str, str, str, datetime]], catalog: set[str], settings: ModelSettings
) -> dict[str, list[tuple]]:
    """The model computed the plain way, pair by pair in Python, to hold the SQL to."""
    order_skus: dict[str, set[str]] = {}
    for order, _, sku, _ in orders:
        order_skus.setdefault(order, set()).add(sku)
    last_bought: dict[str, dict[str, datetime]] = {}
    for order, buyer, sku, at in orders:
        if len(order_skus[order]) <= settings.max_items_per_order:
            bought = last_bought.setdefault(buyer, {})
            bought[sku] = max(at, bought.get(sku, at))
    baskets = [
        sorted(bought, key=lambda sku: (-bought[sku].timestamp(), sku))[
            : settings.max_items_per_user
        ]
        for bought in last_bought.values()
    ]
    buyers: dict[str, int] = {}
    co_buyers: dict[tuple[str, str], int] = {}
    for basket in baskets:
        for sku in basket:
            buyers[sku] = buyers.get(sku, 0) + 1
            for other in basket:
                if other != sku:
                    co_buyers[sku, other] = co_buyers.get((sku, other), 0) + 1
    scored: dict[str, list[tuple]] = {}
    for (sku, other), count in co_buyers.items():
        if count >= settings.min_co_buyers and other in catalog:
            similarity = round(count / sqrt(buyers[sku] * buyers[other]), 9)
            scored.setdefault(sku, []).append((-similarity, -count, other))
    return {
        sku: [
            (rank, other, round(-similarity, 6), -count)
            for rank, (similarity, count, other) in enumerate(sorted(found)[: settings.top_k], 1)
        ]
        for sku, found in scored.items()
    }


@pytest.mark.parametrize("seed", range(6))
def test_the_model_matches_a_plain_pair_by_pair_computation_on_random_baskets(connection, seed):
    # Few SKUs, buyers and days, so pairs, caps and similarity ties all happen; SKUs S10-S13
    # are sold out of the catalog. Orders of up to 6 lines (a SKU may repeat) against a cap
    # of 4 SKUs, buyers of up to 12 SKUs against a cap of 6.
    rng = random.Random(seed)
    skus = [f"S{i:02d}" for i in range(14)]
    catalog = set(skus[:10])
    orders = [
        (f"O{order}", f"u{buyer}", rng.choice(skus), T0 + timedelta(days=day))
        for order in range(120)
        for buyer, day in [(rng.randrange(25), rng.randrange(4))]
        for _ in range(rng.randint(1, 6))
    ]
    ensure_schema(connection)
    connection.executemany(
        "INSERT INTO raw.products VALUES (?, ?, 'c', 1, false, 'test', now(), 0)",
        [(sku, sku) for sku in sorted(catalog)],
    )
    # One statement for all lines (unnest zips the columns): executemany takes seconds here.
    connection.execute(
        "INSERT INTO raw.orders "
        "SELECT unnest(?), unnest(?), unnest(?), unnest(?), 'test', now(), 0",
        [list(column) for column in zip(*orders, strict=True)],
    )
    settings = ModelSettings(top_k=3, min_co_buyers=2, max_items_per_order=4, max_items_per_user=6)
    build = build_recommendations(connection, SQL_DIR, settings)
    expected = reference_neighbours(orders, catalog, settings)
    # Rich enough to test something: both caps cut, and some lists are cut at top_k.
    assert build.orders_over_cap > 0 and build.buyers_over_cap > 0
    assert sum(len(found) == settings.top_k for found in expected.values()) >= 3
    assert neighbours(connection) == expected
