"""The file the income-enrichment job drops (CSV or Parquet)."""

from __future__ import annotations

import dagster as dg

from personalization_pipeline.settings import IncomeSettings

DEFAULT_INCOME_ENRICHMENT_PATH = IncomeSettings.path
DEFAULT_SETTLE_SECONDS = IncomeSettings.settle_seconds


class EnrichmentFileResource(dg.ConfigurableResource):
    """Path of the latest income-enrichment drop; the vendor overwrites it with a full file."""

    path: str = DEFAULT_INCOME_ENRICHMENT_PATH
    # A file modified more recently than this may still be being written: wait for the next tick.
    settle_seconds: float = DEFAULT_SETTLE_SECONDS
