"""Land Salesforce Contact pages in raw.salesforce_contact."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import duckdb
import pandas as pd

from personalization_pipeline.warehouse.schema import ensure_schema

Record = dict[str, object]

INSERT_PAGE = """
INSERT INTO raw.salesforce_contact
SELECT id, user_id, email, first_name, last_name, membership_status,
       -- REST sends 2024-01-02T03:04:05.000+0000, Data Loader 2024-01-02T03:04:05.000Z
       CAST(system_modstamp AS TIMESTAMPTZ) AT TIME ZONE 'UTC',
       coalesce(CAST(is_deleted AS BOOLEAN), false),
       now() AT TIME ZONE 'UTC'
FROM page
"""


@dataclass(frozen=True)
class ContactCounts:
    rows: int
    deleted: int
    without_user_id: int


def replace_contacts(
    connection: duckdb.DuckDBPyConnection,
    pages: Iterable[list[Record]],
    fields: dict[str, str],
) -> int:
    """Replace the table with a full extract, page by page, in one transaction; returns rows.

    `fields` maps Salesforce field names to column names. If the extract fails midway the
    transaction rolls back and the previous extract stays, so a rerun starts clean.
    """
    ensure_schema(connection)
    connection.begin()
    try:
        connection.execute("DELETE FROM raw.salesforce_contact")
        for records in pages:
            page = pd.DataFrame(
                [{column: record[field] for field, column in fields.items()} for record in records],
                columns=list(fields.values()),
                dtype=object,
            )
            connection.register("page", page)
            connection.execute(INSERT_PAGE)
            connection.unregister("page")
        connection.commit()
    except BaseException:
        connection.rollback()
        raise
    return connection.execute("SELECT count(*) FROM raw.salesforce_contact").fetchone()[0]


def contact_counts(connection: duckdb.DuckDBPyConnection) -> ContactCounts:
    rows, deleted, without_user_id = connection.execute(
        """
        SELECT count(*), count(*) FILTER (is_deleted),
               count(*) FILTER (NOT is_deleted AND coalesce(trim(user_id), '') = '')
        FROM raw.salesforce_contact
        """
    ).fetchone()
    return ContactCounts(rows=rows, deleted=deleted, without_user_id=without_user_id)
