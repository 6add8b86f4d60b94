"""The file the income-enrichment job drops (CSV or Parquet)."""

from __future__ import annotations

import dagster as dg

DEFAULT_INCOME_ENRICHMENT_PATH = "data/sample/income_enrichment.csv"
DEFAULT_SETTLE_SECONDS = 60.0


class EnrichmentFileResource(dg.ConfigurableResource):
    """Path of the latest income-enrichment drop; the vendor overwrites it with a full file."""

    path: str = DEFAULT_INCOME_ENRICHMENT_PATH
    # A file modified more recently than this may still be being written: wait for the next tick.
    settle_seconds: float = DEFAULT_SETTLE_SECONDS
