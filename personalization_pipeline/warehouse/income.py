"""Land the income-enrichment drop (CSV or Parquet) in raw.income_enrichment."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import duckdb

from personalization_pipeline.errors import SourceFileError, SourceShrankError, require_columns
from personalization_pipeline.warehouse.csv_files import csv_header, csv_pages
from personalization_pipeline.warehouse.guards import shrink_guard
from personalization_pipeline.warehouse.schema import ensure_schema
from personalization_pipeline.warehouse.transaction import transaction

REQUIRED_COLUMNS = ["email", "income_bracket"]
TABLE = "raw.income_enrichment"
PAGE_SIZE = 50_000
CONFLICT_EXAMPLES = 3

# One email (in any case) with different brackets: user_profiles takes the newest enriched_at,
# then the later line of the drop (assets/traits/income_enrichment.py). Counted here, to be seen.
CONFLICTS = """
SELECT count(*) OVER (), email_key, string_agg(
    'line ' || source_line || ': ' || coalesce(income_bracket, 'null') || ' ('
    || coalesce(CAST(enriched_at AS VARCHAR), 'undated') || ')', ', ' ORDER BY source_line)
FROM (SELECT lower(email) AS email_key, * FROM raw.income_enrichment WHERE email IS NOT NULL)
GROUP BY email_key
HAVING count(DISTINCT coalesce(income_bracket, '')) > 1
ORDER BY email_key
LIMIT ?
"""


@dataclass(frozen=True)
class IncomeLoad:
    rows: int
    without_email: int
    previous_rows: int | None
    conflicting_emails: int = 0
    conflict_examples: tuple[str, ...] = ()


def missing_file_message(path: Path) -> str:
    return (
        f"Income enrichment file {path} does not exist: set INCOME_ENRICHMENT_PATH to the file "
        "the enrichment job drops"
    )


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".csv", ".gz"):
        return "csv"
    raise SourceFileError(
        f"{path}: income enrichment must be a .csv or .parquet file, got '{suffix}'"
    )


def _insert(connection: duckdb.DuckDBPyConnection, relation: str, path: Path, dated: bool) -> None:
    enriched_at = "TRY_CAST(enriched_at AS DATE)" if dated else "NULL"
    connection.execute(
        f"""
        INSERT INTO raw.income_enrichment
            (email, income_bracket, enriched_at, source_file, loaded_at, source_line)
        SELECT nullif(trim(CAST(email AS VARCHAR)), ''),
               nullif(trim(CAST(income_bracket AS VARCHAR)), ''),
               {enriched_at}, ?, now() AT TIME ZONE 'UTC', source_line
        FROM {relation}
        """,
        [str(path)],
    )


def _load_csv(connection: duckdb.DuckDBPyConnection, path: Path, columns: list[str]) -> None:
    for frame in csv_pages(path, PAGE_SIZE):
        first = frame.attrs["first_line"]
        page = frame[columns].assign(source_line=range(first, first + len(frame)))
        connection.register("income_page", page)
        _insert(connection, "income_page", path, "enriched_at" in columns)
        connection.unregister("income_page")


def _load_parquet(connection: duckdb.DuckDBPyConnection, path: Path, columns: list[str]) -> None:
    relation = (
        "(SELECT *, file_row_number + 1 AS source_line "
        f"FROM read_parquet({_quoted(path)}, file_row_number = true))"
    )
    _insert(connection, relation, path, "enriched_at" in columns)


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _columns(connection: duckdb.DuckDBPyConnection, path: Path, kind: str) -> list[str]:
    if kind == "csv":
        return csv_header(path)
    described = connection.execute(f"DESCRIBE SELECT * FROM read_parquet({_quoted(path)})")
    return [row[0] for row in described.fetchall()]


def replace_income(
    connection: duckdb.DuckDBPyConnection, path: str | Path, max_shrink_fraction: float
) -> IncomeLoad:
    """Replace raw.income_enrichment with the file's rows; the drop is always a full file.

    A drop that is empty or lost more than `max_shrink_fraction` of the rows of the last good
    one (a truncated or half-written file) is refused and the previous drop stays: every run
    after it, whichever source started it, would otherwise null income brackets in Redis.
    A CSV is parsed strictly (warehouse/csv_files.py); a file that cannot be read fails with
    a SourceFileError naming where.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing_file_message(path))
    ensure_schema(connection)
    kind = _kind(path)
    try:
        found = _columns(connection, path, kind)
        require_columns(str(path), found, REQUIRED_COLUMNS)
        wanted = [*REQUIRED_COLUMNS, *(["enriched_at"] if "enriched_at" in found else [])]
        with transaction(connection):
            connection.execute("DELETE FROM raw.income_enrichment")
            (_load_csv if kind == "csv" else _load_parquet)(connection, path, wanted)
            verdict = shrink_guard(connection, TABLE, max_shrink_fraction)
            if not verdict.passed:
                raise SourceShrankError(
                    f"{path}: {verdict.explain(TABLE, max_shrink_fraction)}; {TABLE} keeps the "
                    "previous drop. If the rows really left, raise PROFILE_MAX_SHRINK for one run"
                )
    except (duckdb.InvalidInputException, duckdb.ConversionException) as error:
        raise SourceFileError(f"{path} cannot be read as {kind}: {error}") from None
    rows, without_email = connection.execute(
        "SELECT count(*), count(*) FILTER (email IS NULL) FROM raw.income_enrichment"
    ).fetchone()
    conflicts = connection.execute(CONFLICTS, [CONFLICT_EXAMPLES]).fetchall()
    return IncomeLoad(
        rows=rows,
        without_email=without_email,
        previous_rows=verdict.baseline,
        conflicting_emails=conflicts[0][0] if conflicts else 0,
        conflict_examples=tuple(f"{email}: {lines}" for _, email, lines in conflicts),
    )


def file_sha256(path: Path) -> str:
    """The file's content hash, read in blocks (the sensor compares it across runs)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
