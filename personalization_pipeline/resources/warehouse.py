"""The DuckDB warehouse: one file, opened by one Dagster step at a time (pool `duckdb`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from personalization_pipeline.settings import WarehouseSettings

DEFAULT_WAREHOUSE_PATH = WarehouseSettings.path
# DuckDB takes an exclusive file lock; a step that starts while another process still holds it
# (a finishing run, a notebook) waits a little instead of failing at once.
LOCK_RETRIES = 10
LOCK_RETRY_SECONDS = 0.5


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file that holds raw, analytics and sync state."""

    path: str = DEFAULT_WAREHOUSE_PATH

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        database = Path(self.path)
        database.parent.mkdir(parents=True, exist_ok=True)
        connection = _connect_with_retry(database)
        try:
            yield connection
        finally:
            connection.close()


def _connect_with_retry(database: Path) -> duckdb.DuckDBPyConnection:
    for attempt in range(LOCK_RETRIES):
        try:
            return duckdb.connect(str(database))
        except duckdb.IOException as error:
            if attempt == LOCK_RETRIES - 1:
                raise RuntimeError(
                    f"Could not open the warehouse {database}: {error}. Another process holds "
                    "DuckDB's lock; stop it (only Dagster runs in the `duckdb` pool may open the "
                    "file) or point WAREHOUSE_PATH at another file."
                ) from error
            time.sleep(LOCK_RETRY_SECONDS)
    raise AssertionError("unreachable")
