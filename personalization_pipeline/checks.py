"""What the data-quality checks share: run a query for offending rows, report them the same way.

A passing check says the rule it holds; a failing one counts the rows that break it and shows a
few. The checks themselves live beside the assets they check.
"""

from __future__ import annotations

import dagster as dg

from personalization_pipeline.metadata import markdown_table
from personalization_pipeline.resources.warehouse import WarehouseResource

CHECK_EXAMPLES = 5


def violations(
    warehouse: WarehouseResource, sql: str, parameters: list | None = None
) -> tuple[int, list[tuple]]:
    """Run a query returning (value, rows, ...) for offending values; total rows and the lines."""
    with warehouse.connect() as connection:
        rows = connection.execute(sql, parameters or []).fetchall()
    return sum(row[1] for row in rows), rows


def rule_result(
    violations: int, examples: list[tuple], rule: str, what: str, columns: list[str], **counts: int
) -> dg.AssetCheckResult:
    """A passing check says the rule it holds; a failing one counts what broke it."""
    return dg.AssetCheckResult(
        passed=violations == 0,
        description=f"{violations} {what}" if violations else f"Holds: {rule}",
        metadata={
            "violations": violations,
            **counts,
            "examples": dg.MetadataValue.md(markdown_table(columns, examples[:CHECK_EXAMPLES])),
        },
    )


def value_rule(
    warehouse: WarehouseResource,
    table: str,
    column: str,
    sql: str,
    parameter: object,
    rule: str,
    what: str,
) -> dg.AssetCheckResult:
    """Every non-null value of `column` satisfies the SQL `sql` (with one ? for `parameter`)."""
    count, examples = violations(
        warehouse,
        f"""
        SELECT {column}, count(*) FROM {table}
        WHERE {column} IS NOT NULL AND NOT {sql}
        GROUP BY ALL ORDER BY count(*) DESC, {column}
        """,
        [parameter],
    )
    return rule_result(count, examples, rule, what, [column, "rows"])
