"""Row-count guards: has a table lost too many rows since it last passed?

The baseline is the row count recorded the last time the guard passed, kept in the warehouse
(`checks.row_count_baseline`), so a failed build never becomes the next run's yardstick.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

BASELINE_TABLE = """
CREATE SCHEMA IF NOT EXISTS checks;
CREATE TABLE IF NOT EXISTS checks.row_count_baseline (
    table_name VARCHAR PRIMARY KEY,
    row_count BIGINT NOT NULL,
    recorded_at TIMESTAMP NOT NULL
);
"""


@dataclass(frozen=True)
class ShrinkVerdict:
    rows: int
    baseline: int | None
    lost_fraction: float
    passed: bool

    def explain(self, table: str, max_fraction: float) -> str:
        if self.rows == 0:
            return f"{table} is empty"
        return (
            f"{table} shrank from {self.baseline} to {self.rows} rows "
            f"({self.lost_fraction:.0%} lost, limit {max_fraction:.0%})"
        )


def shrink_guard(
    connection: duckdb.DuckDBPyConnection, table: str, max_fraction: float
) -> ShrinkVerdict:
    """Compare the table's row count with its baseline; a pass becomes the new baseline.

    An empty table never passes: no source legitimately delivers zero profiles or income rows.
    """
    connection.execute(BASELINE_TABLE)
    (rows,) = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
    found = connection.execute(
        "SELECT row_count FROM checks.row_count_baseline WHERE table_name = ?", [table]
    ).fetchone()
    baseline = found[0] if found else None
    lost = max(0.0, (baseline - rows) / baseline) if baseline else 0.0
    passed = rows > 0 and lost <= max_fraction
    if passed:
        connection.execute(
            "INSERT OR REPLACE INTO checks.row_count_baseline "
            "VALUES (?, ?, now() AT TIME ZONE 'UTC')",
            [table, rows],
        )
    return ShrinkVerdict(rows=rows, baseline=baseline, lost_fraction=lost, passed=passed)
