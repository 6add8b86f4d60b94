"""Columns that configuration adds to a table (extra Salesforce fields), beside the migrations.

The numbered migrations in schema.py hold what every warehouse has; a configured column exists
only where it was configured, so it is added at landing time, idempotently: ADD COLUMN when
absent, nothing when present with the same type. A column whose type would change is refused
(its values would have to be converted or lost), and a column no longer configured stays.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from personalization_pipeline.errors import PermanentError
from personalization_pipeline.warehouse.tables import Column, Table


class ColumnTypeChangeError(PermanentError, ValueError):
    """A configured column exists with another type than the configuration now gives it."""


def column_types(connection: duckdb.DuckDBPyConnection, table: Table) -> dict[str, str]:
    """Column name -> DuckDB type of the table as it is in this warehouse."""
    schema, name = table.name.split(".")
    rows = connection.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [schema, name],
    ).fetchall()
    return dict(rows)


def add_columns(
    connection: duckdb.DuckDBPyConnection, table: Table, columns: Sequence[Column]
) -> list[str]:
    """Add each of `columns` the table lacks; return the names added."""
    existing = column_types(connection, table)
    added = []
    for column in columns:
        wanted = _canonical(connection, column.type)
        if column.name not in existing:
            connection.execute(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {wanted}')
            added.append(column.name)
        elif existing[column.name] != wanted:
            raise ColumnTypeChangeError(
                f"{table.name}.{column.name} is {existing[column.name]}, but {column.description} "
                f"is now {wanted}; a column keeps its type. Change the field back, or drop the "
                f'column (ALTER TABLE {table.name} DROP COLUMN "{column.name}") and run again: '
                "the run that adds it back reloads every contact"
            )
    return added


def _canonical(connection: duckdb.DuckDBPyConnection, column_type: str) -> str:
    """DuckDB's own name for a type (TIMESTAMPTZ is TIMESTAMP WITH TIME ZONE), as
    information_schema reports it."""
    (name,) = connection.execute(f"SELECT typeof(CAST(NULL AS {column_type}))").fetchone()
    return name
