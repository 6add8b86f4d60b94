"""One DuckDB transaction: commit when the block succeeds, roll back when it raises."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb


@contextmanager
def transaction(connection: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Without the rollback, DuckDB keeps the failed transaction open and every later statement
    on the connection (logging the run, say) fails too, hiding the error that mattered."""
    connection.begin()
    try:
        yield
    except BaseException:
        connection.rollback()
        raise
    connection.commit()
