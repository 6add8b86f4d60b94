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
-- Events from the gateway's streams, one row per messageId (personalization_pipeline/
-- warehouse/events.py). Timestamps are UTC; payload is the event exactly as accepted.
CREATE TABLE IF NOT EXISTS raw.events (
    message_id VARCHAR PRIMARY KEY,
    type VARCHAR,                       -- lowercased: identify, track, page, ...
    event VARCHAR,                      -- track name
    user_id VARCHAR,
    anonymous_id VARCHAR,
    "timestamp" TIMESTAMP NOT NULL,     -- when it happened, as resolved by the gateway
    received_at TIMESTAMP NOT NULL,
    landed_at TIMESTAMP NOT NULL,
    stream VARCHAR NOT NULL,
    entry_id VARCHAR NOT NULL,          -- of the first entry that carried it
    payload JSON NOT NULL
);
CREATE TABLE IF NOT EXISTS raw.events_rejected (
    stream VARCHAR NOT NULL,
    entry_id VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    raw VARCHAR,                        -- the entry's text, to repair and replay by hand
    rejected_at TIMESTAMP NOT NULL,
    PRIMARY KEY (stream, entry_id)
);
CREATE TABLE IF NOT EXISTS raw.events_trimmed (
    detected_at TIMESTAMP NOT NULL,
    stream VARCHAR NOT NULL,
    entries BIGINT NOT NULL,            -- lost: removed by the stream's MAXLEN before landing
    how VARCHAR NOT NULL,
    entry_ids VARCHAR[] NOT NULL        -- known only for entries that were pending
);
-- Which emails an app user identified with, from identify events (traits, context.traits).
CREATE TABLE IF NOT EXISTS analytics.identities (
    user_id VARCHAR NOT NULL,
    email VARCHAR NOT NULL,             -- trimmed and lowercased, for matching
    first_seen TIMESTAMP NOT NULL,
    last_seen TIMESTAMP NOT NULL,
    PRIMARY KEY (user_id, email)
);
-- The product catalog and the historical orders, as the last file drop held them
-- (personalization_pipeline/warehouse/catalog.py). Lines that could not land are in
-- raw.rejected_lines.
CREATE TABLE IF NOT EXISTS raw.products (
    sku VARCHAR NOT NULL,
    name VARCHAR,
    category VARCHAR NOT NULL,
    price DECIMAL(12, 2) NOT NULL,
    member_only BOOLEAN NOT NULL,
    source_file VARCHAR NOT NULL,
    loaded_at TIMESTAMP NOT NULL,
    source_line BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS raw.orders (
    order_id VARCHAR NOT NULL,
    user_id VARCHAR NOT NULL,
    sku VARCHAR NOT NULL,
    ordered_at TIMESTAMP NOT NULL,      -- UTC
    source_file VARCHAR NOT NULL,
    loaded_at TIMESTAMP NOT NULL,
    source_line BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS raw.rejected_lines (
    table_name VARCHAR NOT NULL,        -- the table the line was meant for
    source_file VARCHAR NOT NULL,
    source_line BIGINT NOT NULL,
    reason VARCHAR NOT NULL,
    line VARCHAR NOT NULL,              -- the line's values as JSON, to repair by hand
    rejected_at TIMESTAMP NOT NULL
);
-- Warehouses created before the tie-break on file order gain the column.
ALTER TABLE raw.income_enrichment ADD COLUMN IF NOT EXISTS source_line BIGINT;
"""


def ensure_schema(connection: duckdb.DuckDBPyConnection) -> None:
    connection.execute(RAW_TABLES)
