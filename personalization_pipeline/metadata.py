"""Dagster metadata shared by the assets: row counts and a small markdown preview."""

from __future__ import annotations

import dagster as dg
import duckdb

PREVIEW_ROWS = 5


def markdown_table(columns: list[str], rows: list[tuple]) -> str:
    def cell(value: object) -> str:
        return "" if value is None else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def table_metadata(connection: duckdb.DuckDBPyConnection, table: str) -> dict[str, object]:
    """Row count, table name and a preview of the first rows of a warehouse table."""
    relation = connection.sql(f"SELECT * FROM {table} LIMIT {PREVIEW_ROWS}")
    (rows,) = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
    return {
        "dagster/row_count": rows,
        "dagster/table_name": table,
        "preview": dg.MetadataValue.md(markdown_table(relation.columns, relation.fetchall())),
    }
