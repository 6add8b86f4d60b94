"""What raw.salesforce_contact holds, for asset metadata and logs.

Contacts land through personalization_pipeline/salesforce/extract.py, whichever the source.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb


@dataclass(frozen=True)
class ContactCounts:
    rows: int
    deleted: int
    without_user_id: int


def contact_counts(connection: duckdb.DuckDBPyConnection) -> ContactCounts:
    rows, deleted, without_user_id = connection.execute(
        """
        SELECT (SELECT count(*) FROM raw.salesforce_contact),
               (SELECT count(*) FILTER (is_deleted) FROM raw.salesforce_contact),
               (SELECT count(*) FILTER (NOT has_user_id) FROM analytics.live_contacts)
        """
    ).fetchone()
    return ContactCounts(rows=rows, deleted=deleted, without_user_id=without_user_id)
