"""Raw tables as the warehouse stores them; created on first use so a fresh file just works."""

from __future__ import annotations

import duckdb

RAW_TABLES = """
CREATE SCHEMA IF NOT EXISTS raw;
CREATE SCHEMA IF NOT EXISTS analytics;
CREATE TABLE IF NOT EXISTS raw.salesforce_contact (
    id VARCHAR PRIMARY KEY,
    user_id VARCHAR,
    email VARCHAR,
    first_name VARCHAR,
    last_name VARCHAR,
    membership_status VARCHAR,
    system_modstamp TIMESTAMP,          -- UTC
    is_deleted BOOLEAN NOT NULL,
    loaded_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS raw.income_enrichment (
    email VARCHAR,
    income_bracket VARCHAR,
    enriched_at DATE,
    source_file VARCHAR NOT NULL,
    loaded_at TIMESTAMP NOT NULL,
    source_line BIGINT                  -- the row's line (CSV) or row number (Parquet)
);
-- Warehouses created before the tie-break on file order gain the column.
ALTER TABLE raw.income_enrichment ADD COLUMN IF NOT EXISTS source_line BIGINT;
"""


def ensure_schema(connection: duckdb.DuckDBPyConnection) -> None:
    connection.execute(RAW_TABLES)
