"""Recommendation model benchmark: build time and peak memory over 1,000,000 orders.

Generates a catalog of 50,000 products and 1,000,000 orders (1-4 items each, popularity
skewed, 200,000 buyers) plus a few huge orders (3 x 3,000 items, as a wholesale or test order
would be) into a DuckDB file, then builds the model (assets/sql/) in a fresh child process
twice: with the caps lifted (the same-run baseline that shows what the guards save) and with
the default caps. Peak memory is each child's own maximum resident set size.

    .venv/bin/python benchmarks/model.py [--orders 1000000] [--products 50000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from personalization_pipeline.warehouse.recommendations import (  # noqa: E402
    ModelSettings,
    build_recommendations,
)
from personalization_pipeline.warehouse.schema import ensure_schema  # noqa: E402

BUYERS = 200_000
HUGE_ORDERS = 3
HUGE_ITEMS = 3_000


def generate(path: Path, orders: int, products: int) -> int:
    """The catalog and the orders in raw.products / raw.orders; returns the order lines."""
    with duckdb.connect(str(path)) as connection:
        ensure_schema(connection)
        connection.execute("SELECT setseed(0.42)")
        connection.execute(
            f"""
            INSERT INTO raw.products
            SELECT 'SKU-' || i, 'Product ' || i, 'category-' || (i % 40),
                   CAST(1 + random() * 500 AS DECIMAL(12, 2)), random() < 0.1,
                   'generated', now(), i
            FROM range({products}) AS t(i)
            """
        )
        # Skewed popularity: SKU index floor(n * u^3) makes low SKUs bestsellers; a second
        # item is near the first one half the time, so there are real affinities to find.
        connection.execute(
            f"""
            INSERT INTO raw.orders
            WITH o AS (
                SELECT i AS order_id, CAST(floor(random() * {BUYERS}) AS BIGINT) AS buyer,
                       CAST(floor({products} * pow(random(), 3)) AS BIGINT) AS first_sku,
                       1 + CAST(floor(random() * 4) AS BIGINT) AS items,
                       TIMESTAMP '2024-01-01'
                           + to_seconds(CAST(random() * 3e7 AS BIGINT)) AS ordered
                FROM range({orders}) AS t(i)
            )
            SELECT 'O' || order_id, 'U' || buyer,
                   'SKU-' || CASE WHEN item = 0 THEN first_sku
                                  WHEN random() < 0.5 THEN (first_sku + item) % {products}
                                  ELSE CAST(floor({products} * pow(random(), 3)) AS BIGINT) END,
                   ordered, 'generated', now(), order_id
            FROM o, range(items) AS r(item)
            """
        )
        connection.execute(
            f"""
            INSERT INTO raw.orders
            SELECT 'HUGE' || h, 'U' || h, 'SKU-' || CAST(floor(random() * {products}) AS BIGINT),
                   TIMESTAMP '2024-06-01', 'generated', now(), 0
            FROM range({HUGE_ORDERS}) AS a(h), range({HUGE_ITEMS}) AS b(i)
            """
        )
        (lines,) = connection.execute("SELECT count(*) FROM raw.orders").fetchone()
    return lines


def build(path: str, capped: bool) -> None:
    """In the child: build the model and print seconds and what it made."""
    settings = ModelSettings()
    if not capped:
        settings = ModelSettings(max_items_per_order=10**9, max_items_per_user=10**9)
    with duckdb.connect(path) as connection:
        started = time.perf_counter()
        result = build_recommendations(connection, ROOT / "assets" / "sql", settings)
        seconds = time.perf_counter() - started
    print(f"{seconds:.2f} {result.neighbour_rows} {result.skus_with_neighbours}")


def measure(path: Path, capped: bool) -> tuple[float, float, int, int, float]:
    """Build time, the child's CPU seconds, what it made and its own peak RSS in MiB.

    os.wait4 gives this child's rusage alone (RUSAGE_CHILDREN is the maximum over all
    children so far, which would hide a smaller second peak). The CPU seconds are the whole
    child's (start-up included); on a shared machine they move less with the load than the
    wall time does, though contention still inflates them (10-16 s for the same build here)."""
    with tempfile.TemporaryFile("w+") as errors:
        child = subprocess.Popen(
            [sys.executable, __file__, "--build", str(path), *([] if capped else ["--uncapped"])],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        output = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            errors.seek(0)
            raise SystemExit(f"the build failed (exit {child.returncode}):\n{errors.read()}")
    seconds, rows, skus = output.split()
    cpu = usage.ru_utime + usage.ru_stime
    return float(seconds), cpu, int(rows), int(skus), usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--products", type=int, default=50_000)
    parser.add_argument("--build")
    parser.add_argument("--uncapped", action="store_true")
    args = parser.parse_args()
    if args.build:
        build(args.build, capped=not args.uncapped)
        return
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "warehouse.duckdb"
        started = time.perf_counter()
        lines = generate(path, args.orders, args.products)
        print(
            f"generated {args.orders:,} orders + {HUGE_ORDERS} of {HUGE_ITEMS:,} items "
            f"({lines:,} lines) over {args.products:,} products in "
            f"{time.perf_counter() - started:.1f} s"
        )
        results = {}
        for capped in (False, True):
            seconds, cpu, rows, skus, peak = measure(path, capped)
            label = "default caps (50 per order, 100 per buyer)" if capped else "caps lifted"
            print(
                f"  {label:<44} build {seconds:6.2f} s ({cpu:5.1f} s CPU), "
                f"peak RSS {peak:6.0f} MiB, {rows:,} neighbour rows for {skus:,} SKUs"
            )
            results[capped] = seconds, cpu
        (capped_s, capped_cpu), (lifted_s, lifted_cpu) = results[True], results[False]
        print(
            f"  capped / uncapped: build time {capped_s / lifted_s:.2f}, "
            f"CPU {capped_cpu / lifted_cpu:.2f}"
        )


if __name__ == "__main__":
    main()
