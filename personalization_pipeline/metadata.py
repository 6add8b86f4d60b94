"""Dagster metadata shared by the assets: row counts and a small markdown preview.

Previews land in Dagster's event log, which more people read than the warehouse, so personal
fields are masked there unless PREVIEW_PERSONAL_DATA=true (for development on sample data).
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg
import duckdb

from personalization_pipeline.settings import current
from personalization_pipeline.warehouse.tables import Table

PREVIEW_ROWS = 5
# Columns and hash fields that identify a person.
PERSONAL_FIELDS = frozenset({"email", "first_name", "last_name"})


def personal_data_shown() -> bool:
    return current().preview_personal_data


def masked(value: object) -> object:
    """Enough to recognise a value, not to learn it: ``m***@example.com``, ``Q***``."""
    if value is None or personal_data_shown():
        return value
    text = str(value)
    local, at, domain = text.partition("@")
    return f"{local[:1]}***{at}{domain}"


def mask_personal(fields: Mapping[str, object]) -> dict[str, object]:
    return {name: masked(v) if name in PERSONAL_FIELDS else v for name, v in fields.items()}


def markdown_table(columns: list[str], rows: list[tuple]) -> str:
    def cell(value: object) -> str:
        return "" if value is None else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def table_metadata(connection: duckdb.DuckDBPyConnection, table: str) -> dict[str, object]:
    """Row count, table name and a preview of the first rows of a warehouse table."""
    relation = connection.sql(f"SELECT * FROM {table} LIMIT {PREVIEW_ROWS}")
    columns = relation.columns
    preview = [
        tuple(mask_personal(dict(zip(columns, row, strict=True))).values())
        for row in relation.fetchall()
    ]
    (rows,) = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
    return {
        "dagster/row_count": rows,
        "dagster/table_name": table,
        "preview": dg.MetadataValue.md(markdown_table(columns, preview)),
    }


def column_schema(table: Table) -> dict[str, object]:
    """Definition metadata that shows a table's columns (and its name) in the UI."""
    return {
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn(column.name, column.type, description=column.description or None)
                for column in table.columns
            ]
        ),
        "dagster/table_name": table.name,
    }
