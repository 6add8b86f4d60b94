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
    loaded_at TIMESTAMP NOT NULL
);
"""


def ensure_schema(connection: duckdb.DuckDBPyConnection) -> None:
    connection.execute(RAW_TABLES)
