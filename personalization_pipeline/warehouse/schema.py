"""The warehouse schema and its migrations: a fresh file and a deployed one end up the same.

`meta.schema_version` records which migrations a warehouse file has had; `ensure_schema`
applies the missing ones in order, each in its own transaction. Migration 1 creates the tables
from their column specs (`tables.py`) as they are today, with IF NOT EXISTS, so a warehouse
from before versioning keeps what it has; every later change is a new migration written so
that it also holds on a fresh file (``ADD COLUMN IF NOT EXISTS``, ``CREATE OR REPLACE``).
SQL that writes these tables names its columns (`Table.select_list`): a column added by a
migration sits last in an old file and in its spec's place in a new one.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from personalization_pipeline.warehouse.tables import (
    EVENTS,
    EVENTS_REJECTED,
    EVENTS_TRIMMED,
    IDENTITIES,
    INCOME_ENRICHMENT,
    ORDERS,
    PRODUCTS,
    REJECTED_LINES,
    SALESFORCE_CONTACT,
    Table,
)
from personalization_pipeline.warehouse.transaction import transaction

VERSION_TABLE = """
CREATE SCHEMA IF NOT EXISTS meta;
CREATE TABLE IF NOT EXISTS meta.schema_version (
    version INTEGER PRIMARY KEY,
    description VARCHAR NOT NULL,
    applied_at TIMESTAMP NOT NULL
);
"""

# Live contacts, and whether each carries an app user id: the filter the profile models,
# their counts and the email linking share.
LIVE_CONTACTS_VIEW = """
CREATE OR REPLACE VIEW analytics.live_contacts AS
SELECT *, coalesce(trim(user_id), '') <> '' AS has_user_id
FROM raw.salesforce_contact
WHERE NOT is_deleted
"""


def create_tables(*tables: Table) -> str:
    return "\n".join(table.create_sql() for table in tables)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


MIGRATIONS = (
    Migration(
        1,
        "raw and analytics tables",
        "CREATE SCHEMA IF NOT EXISTS raw; CREATE SCHEMA IF NOT EXISTS analytics;\n"
        # Frozen: the tables version 1 had. Tables added later come with their own migration.
        + create_tables(
            SALESFORCE_CONTACT,
            INCOME_ENRICHMENT,
            EVENTS,
            EVENTS_REJECTED,
            EVENTS_TRIMMED,
            IDENTITIES,
        ),
    ),
    # Warehouses created before the tie-break on file order gain the column.
    Migration(
        2,
        "raw.income_enrichment.source_line",
        "ALTER TABLE raw.income_enrichment ADD COLUMN IF NOT EXISTS source_line BIGINT",
    ),
    Migration(3, "analytics.live_contacts view", LIVE_CONTACTS_VIEW),
    Migration(
        4,
        "raw.products, raw.orders, raw.rejected_lines",
        create_tables(PRODUCTS, ORDERS, REJECTED_LINES),
    ),
)
LATEST_VERSION = MIGRATIONS[-1].version


def schema_version(connection: duckdb.DuckDBPyConnection) -> int:
    connection.execute(VERSION_TABLE)
    (version,) = connection.execute(
        "SELECT coalesce(max(version), 0) FROM meta.schema_version"
    ).fetchone()
    return version


def ensure_schema(connection: duckdb.DuckDBPyConnection) -> None:
    """Bring the warehouse to the latest schema; a file newer than this code is refused."""
    current = schema_version(connection)
    if current > LATEST_VERSION:
        raise RuntimeError(
            f"The warehouse is at schema version {current}, newer than this code knows "
            f"({LATEST_VERSION}): deploy the newer code, or point WAREHOUSE_PATH at another file"
        )
    for migration in MIGRATIONS:
        if migration.version <= current:
            continue
        with transaction(connection):
            connection.execute(migration.sql)
            connection.execute(
                "INSERT INTO meta.schema_version VALUES (?, ?, now() AT TIME ZONE 'UTC')",
                [migration.version, migration.description],
            )
