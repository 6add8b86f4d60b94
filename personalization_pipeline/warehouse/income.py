"""Land the income-enrichment drop (CSV or Parquet) in raw.income_enrichment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from personalization_pipeline.errors import SourceFileError, SourceShrankError, require_columns
from personalization_pipeline.warehouse.guards import shrink_guard
from personalization_pipeline.warehouse.schema import ensure_schema
from personalization_pipeline.warehouse.transaction import transaction

REQUIRED_COLUMNS = ["email", "income_bracket"]
TABLE = "raw.income_enrichment"


@dataclass(frozen=True)
class IncomeLoad:
    rows: int
    without_email: int
    previous_rows: int | None


def missing_file_message(path: Path) -> str:
    return (
        f"Income enrichment file {path} does not exist: set INCOME_ENRICHMENT_PATH to the file "
        "the enrichment job drops"
    )


def _reader(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "read_parquet(?)"
    if suffix in (".csv", ".gz"):
        return "read_csv(?, header = true, all_varchar = true)"
    raise SourceFileError(
        f"{path}: income enrichment must be a .csv or .parquet file, got '{suffix}'"
    )


def replace_income(
    connection: duckdb.DuckDBPyConnection, path: str | Path, max_shrink_fraction: float
) -> IncomeLoad:
    """Replace raw.income_enrichment with the file's rows; the drop is always a full file.

    A drop that is empty or lost more than `max_shrink_fraction` of the rows of the last good
    one (a truncated or half-written file) is refused and the previous drop stays: every run
    after it, whichever source started it, would otherwise null income brackets in Redis.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing_file_message(path))
    ensure_schema(connection)
    source = _reader(path)
    found = [
        row[0]
        for row in connection.execute(f"DESCRIBE SELECT * FROM {source}", [str(path)]).fetchall()
    ]
    require_columns(str(path), found, REQUIRED_COLUMNS)
    enriched_at = "TRY_CAST(enriched_at AS DATE)" if "enriched_at" in found else "NULL"
    with transaction(connection):
        connection.execute("DELETE FROM raw.income_enrichment")
        connection.execute(
            f"""
            INSERT INTO raw.income_enrichment
            SELECT nullif(trim(CAST(email AS VARCHAR)), ''),
                   nullif(trim(CAST(income_bracket AS VARCHAR)), ''),
                   {enriched_at}, ?, now() AT TIME ZONE 'UTC'
            FROM {source}
            """,
            [str(path), str(path)],
        )
        verdict = shrink_guard(connection, TABLE, max_shrink_fraction)
        if not verdict.passed:
            raise SourceShrankError(
                f"{path}: {verdict.explain(TABLE, max_shrink_fraction)}; {TABLE} keeps the "
                "previous drop. If the rows really left, raise PROFILE_MAX_SHRINK for one run"
            )
    rows, without_email = connection.execute(
        "SELECT count(*), count(*) FILTER (email IS NULL) FROM raw.income_enrichment"
    ).fetchone()
    return IncomeLoad(rows=rows, without_email=without_email, previous_rows=verdict.baseline)
