"""The recommendation path's sensors: a catalog or order drop with new content starts
recommendations_job; events drained since the last rebuild start the model and its syncs."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import dagster as dg

from assets.events import raw_events
from assets.jobs import RECOMMENDATION_MODEL
from assets.models import product_recommendations
from assets.sensors import (
    catalog_files_sensor,
    recommendations_after_drain_sensor,
)
from assets.sources import CONTENT_SHA256, orders, products
from personalization_pipeline.resources.catalog import CatalogFilesResource
from personalization_pipeline.warehouse.income import file_sha256
from tests.conftest import SAMPLE_DIR


def tick(sensor: dg.SensorDefinition, cursor: str | None, instance=None, **resources):
    context = dg.build_sensor_context(
        instance=instance or dg.DagsterInstance.ephemeral(),
        cursor=cursor,
        resources=resources,
        sensor_name=sensor.name,
    )
    return sensor.evaluate_tick(context)


def copied_samples(directory: Path, settle_seconds: float) -> CatalogFilesResource:
    for name in ("products.csv", "orders.csv"):
        shutil.copyfile(SAMPLE_DIR / name, directory / name)
    return CatalogFilesResource(
        products_path=str(directory / "products.csv"),
        orders_path=str(directory / "orders.csv"),
        settle_seconds=settle_seconds,
    )


def test_catalog_sensor_follows_the_content_of_both_files(tmp_path: Path):
    files = copied_samples(tmp_path, settle_seconds=0)
    first = tick(catalog_files_sensor, None, catalog_files=files)
    assert len(first.run_requests) == 1
    assert first.run_requests[0].asset_selection is None  # the whole recommendations_job
    assert tick(catalog_files_sensor, first.cursor, catalog_files=files).run_requests == []
    orders = tmp_path / "orders.csv"
    stat = orders.stat()
    os.utime(orders, ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**10))
    touched = tick(catalog_files_sensor, first.cursor, catalog_files=files)
    assert touched.run_requests == []
    assert "content is unchanged" in touched.skip_message
    orders.write_text(orders.read_text() + "O999999,U000001,SKU-7,2024-12-01T00:00:00Z\n")
    changed = tick(catalog_files_sensor, touched.cursor, catalog_files=files)
    assert len(changed.run_requests) == 1
    assert changed.run_requests[0].run_key != first.run_requests[0].run_key


def test_catalog_sensor_waits_for_a_file_still_being_written(tmp_path: Path):
    files = copied_samples(tmp_path, settle_seconds=3600)
    waiting = tick(catalog_files_sensor, None, catalog_files=files)
    assert waiting.run_requests == []
    assert "CATALOG_SETTLE_SECONDS" in waiting.skip_message
    assert waiting.cursor is None


def test_a_future_dated_order_file_waits_out_the_settle_time_on_this_hosts_clock(
    tmp_path: Path,
):
    """A writer whose clock is a day ahead: the file used to load at once, even while it was
    still being written, since its age was negative."""
    files = copied_samples(tmp_path, settle_seconds=1)
    for name in ("products.csv", "orders.csv"):
        stat = (tmp_path / name).stat()
        os.utime(tmp_path / name, ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**10))
    orders = tmp_path / "orders.csv"
    os.utime(orders, ns=(orders.stat().st_atime_ns, time.time_ns() + 24 * 3600 * 10**9))
    first = tick(catalog_files_sensor, None, catalog_files=files)
    assert first.run_requests == []
    assert re.search(r"orders.csv is dated 86\d{3}s in the future", first.skip_message)
    assert "CATALOG_SETTLE_SECONDS" in first.skip_message

    # Still being written: the wait starts again from the new size.
    orders.write_text(orders.read_text() + "O999999,U000001,SKU-7,2024-12-01T00:00:00Z\n")
    os.utime(orders, ns=(orders.stat().st_atime_ns, time.time_ns() + 24 * 3600 * 10**9))
    time.sleep(1.1)
    grown = tick(catalog_files_sensor, first.cursor, catalog_files=files)
    assert grown.run_requests == [], "a file that just grew is not still"

    time.sleep(1.1)
    settled = tick(catalog_files_sensor, grown.cursor, catalog_files=files)
    assert len(settled.run_requests) == 1, settled.skip_message
    assert set(json.loads(settled.cursor)) == {"products", "orders"}
    assert tick(catalog_files_sensor, settled.cursor, catalog_files=files).run_requests == []


def test_the_model_is_rebuilt_once_per_drain_that_landed_events():
    instance = dg.DagsterInstance.ephemeral()
    never = tick(recommendations_after_drain_sensor, None, instance)
    assert never.run_requests == [] and "never materialized" in never.skip_message
    instance.report_runless_asset_event(dg.AssetMaterialization(raw_events.key))
    first = tick(recommendations_after_drain_sensor, None, instance)
    (request,) = first.run_requests
    # The model and its syncs; the file sources are the catalog sensor's.
    assert set(request.asset_selection) == set(RECOMMENDATION_MODEL)
    assert tick(recommendations_after_drain_sensor, first.cursor, instance).run_requests == []
    instance.report_runless_asset_event(dg.AssetMaterialization(raw_events.key))
    second = tick(recommendations_after_drain_sensor, first.cursor, instance)
    assert len(second.run_requests) == 1
    # A build after the drain (the demo's, a Launchpad run) already has its events.
    instance.report_runless_asset_event(dg.AssetMaterialization(raw_events.key))
    instance.report_runless_asset_event(dg.AssetMaterialization(product_recommendations.key))
    built = tick(recommendations_after_drain_sensor, second.cursor, instance)
    assert built.run_requests == [] and "came after the latest drain" in built.skip_message
    assert built.cursor != second.cursor


def test_files_the_latest_materializations_loaded_start_no_run(tmp_path: Path):
    """After the demo (or a Launchpad run) loaded these files, a first `make dev` starts nothing."""
    files = copied_samples(tmp_path, settle_seconds=0)
    instance = dg.DagsterInstance.ephemeral()
    for asset, path in ((products, files.products_path), (orders, files.orders_path)):
        metadata = {CONTENT_SHA256: file_sha256(Path(path))}
        instance.report_runless_asset_event(dg.AssetMaterialization(asset.key, metadata=metadata))
    quiet = tick(catalog_files_sensor, None, instance, catalog_files=files)
    assert quiet.run_requests == []
    assert "already loaded" in quiet.skip_message
