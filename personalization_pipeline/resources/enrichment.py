"""The file the income-enrichment job drops (CSV or Parquet)."""

from __future__ import annotations

import dagster as dg

DEFAULT_INCOME_ENRICHMENT_PATH = "data/sample/income_enrichment.csv"


class EnrichmentFileResource(dg.ConfigurableResource):
    """Path of the latest income-enrichment drop; the vendor overwrites it with a full file."""

    path: str = DEFAULT_INCOME_ENRICHMENT_PATH
