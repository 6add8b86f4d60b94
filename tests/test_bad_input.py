"""Bad source files fail at once (no retry policy), naming the file, line and column; a stray
quote in the contact export can no longer swallow rows and delete their users from Redis."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from assets.sources import income_enrichment, salesforce_contacts
from personalization_pipeline.definitions import defs
from personalization_pipeline.resources.enrichment import EnrichmentFileResource
from personalization_pipeline.resources.salesforce import SalesforceApiSource, SampleContactSource
from tests.conftest import SAMPLE_DIR

EXPORT = SAMPLE_DIR / "salesforce_contacts.csv"
HEADER, *ROWS = EXPORT.read_bytes().splitlines(keepends=True)
INCOME_HEADER = b"email,income_bracket,enriched_at\n"


def failure(result: dg.ExecuteInProcessResult) -> str:
    """The step's failure message; a retry (60 s, then 180 s) is itself a failure of the test."""
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return event.step_failure_data.user_failure_data.description


def export_with(tmp_path: Path, rows: list[bytes]) -> Path:
    path = tmp_path / "contacts.csv"
    path.write_bytes(HEADER + b"".join(rows))
    return path


def land_contacts(resources: dict, source) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [salesforce_contacts], resources={**resources, "salesforce": source}, raise_on_error=False
    )


def live_contacts(resources: dict) -> set[str]:
    with duckdb.connect(resources["warehouse"].path) as connection:
        rows = connection.execute("SELECT id FROM raw.salesforce_contact WHERE NOT is_deleted")
        return {row[0] for row in rows.fetchall()}


def field(row: bytes, index: int) -> bytes:
    return row.rstrip(b"\n").split(b",")[index]


def with_field(row: bytes, index: int, value: bytes) -> bytes:
    values = row.rstrip(b"\n").split(b",")
    values[index] = value
    return b",".join(values) + b"\n"


def stray_quote_pair(first: int, swallowed: int) -> list[bytes]:
    """Rows with a quote opened in FirstName of row `first` and closed in FirstName of the row
    `swallowed` lines below: the row count still fits, the rows between become one value."""
    rows = list(ROWS)
    rows[first] = with_field(rows[first], 2, b'"' + field(rows[first], 2))
    last = first + swallowed + 1
    rows[last] = with_field(rows[last], 2, field(rows[last], 2) + b'"')
    return rows


def test_a_stray_quote_pair_fails_with_its_line_and_redis_keeps_the_users(
    pipeline_resources, redis_client, tmp_path
):
    """The fault as found: 20 contacts vanished from the parse, were marked deleted (the export
    allowed any share of deletions), passed the shrink guard, and mirror removed them."""
    job = defs.resolve_job_def("warehouse_actions_job")
    mirror = {"ops": {"redis_user_profiles": {"config": {"mode": "mirror"}}}}
    assert job.execute_in_process(resources=pipeline_resources, run_config=mirror).success
    swallowed = ROWS[101:121]
    users = [field(row, 5).decode() for row in swallowed if field(row, 5)]
    assert len(users) > 10 and all(redis_client.exists(f"user:{user}") for user in users)

    bad = export_with(tmp_path, stray_quote_pair(100, swallowed=20))
    resources = {**pipeline_resources, "salesforce": SampleContactSource(path=str(bad))}
    result = job.execute_in_process(resources=resources, run_config=mirror, raise_on_error=False)

    assert not result.success
    message = failure(result)
    assert f"{bad}, line 102, column 3 (FirstName): a quoted value spans lines 102-123" in message
    assert "stray or unclosed quote" in message
    assert {field(row, 0).decode() for row in swallowed} <= live_contacts(pipeline_resources)
    assert all(redis_client.exists(f"user:{user}") for user in users)


@pytest.mark.parametrize(
    ("rows", "where", "problem"),
    [
        pytest.param(
            [*ROWS[:299], ROWS[299].rstrip(b"\n") + b",extra\n", *ROWS[300:]],
            "line 301, column 9",
            "expected 8 values as in the header, found 9",
            id="a-row-with-an-extra-value",
        ),
        pytest.param(
            [*ROWS[:4], ROWS[4].rsplit(b",", 1)[0] + b"\n", *ROWS[5:]],
            "line 6, column 8 (IsDeleted)",
            "expected 8 values as in the header, found 7",
            id="a-short-row-that-pandas-padded-with-nulls",
        ),
        pytest.param(
            [*ROWS[:7], b"\n", *ROWS[7:]],
            "line 9",
            "the line is blank",
            id="a-blank-line-that-pandas-skipped",
        ),
        pytest.param(
            [*ROWS[:-1], with_field(ROWS[-1], 2, b'"Unclosed')],
            "line 1001",
            "unexpected end of data (a stray or unclosed quote?)",
            id="an-unclosed-quote",
        ),
        pytest.param(
            [*ROWS[:2], ROWS[2].replace(b"Luis", b"Lu\xefs"), *ROWS[3:]],
            "line 4, column 3 (FirstName)",
            "byte 0xef is not UTF-8",
            id="latin-1-in-a-utf-8-export",
        ),
        pytest.param(
            [*ROWS[:9], ROWS[9].replace(b"2024-", b"20x4-", 1), *ROWS[10:]],
            "line 11, column SystemModstamp",
            "is not a valid TIMESTAMPTZ",
            id="a-value-duckdb-cannot-cast",
        ),
    ],
)
def test_an_export_that_does_not_parse_strictly_fails_at_once_and_deletes_nothing(
    pipeline_resources, tmp_path, rows, where, problem
):
    assert land_contacts(pipeline_resources, SampleContactSource(path=str(EXPORT))).success
    before = live_contacts(pipeline_resources)
    bad = export_with(tmp_path, rows)
    result = land_contacts(pipeline_resources, SampleContactSource(path=str(bad)))
    message = failure(result)
    assert f"{bad}, {where}: " in message and problem in message
    assert live_contacts(pipeline_resources) == before


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        pytest.param(
            "income.csv",
            INCOME_HEADER + b"ann@example.com,level_1,2024-06-01\nb\xe9a@example.com,level_2,\n",
            "income.csv, line 3, column 1 (email): byte 0xe9 is not UTF-8",
            id="not-utf-8",
        ),
        pytest.param(
            "income.csv",
            INCOME_HEADER + b"ann@example.com,level_1,2024-06-01\nbea@example.com,level_2,,x\n",
            "income.csv, line 3, column 4: expected 3 values as in the header, found 4",
            id="an-extra-value-duckdb-took-the-last-line-for-the-header",
        ),
        pytest.param("income.csv", b"", "income.csv is empty", id="empty-not-column0"),
        pytest.param(
            "income.parquet",
            b"PAR1 not really",
            "income.parquet cannot be read as parquet",
            id="a-broken-parquet-file",
        ),
    ],
)
def test_a_bad_income_file_fails_at_once_naming_where(
    pipeline_resources, tmp_path, name, content, expected
):
    path = tmp_path / name
    path.write_bytes(content)
    resources = {**pipeline_resources, "income_file": EnrichmentFileResource(path=str(path))}
    result = dg.materialize([income_enrichment], resources=resources, raise_on_error=False)
    message = failure(result)
    assert expected in message
    assert "column0" not in message


def test_an_empty_export_says_empty(pipeline_resources, tmp_path):
    empty = tmp_path / "contacts.csv"
    empty.write_bytes(b"")
    message = failure(land_contacts(pipeline_resources, SampleContactSource(path=str(empty))))
    assert f"{empty} is empty" in message


def test_incomplete_salesforce_credentials_fail_at_once(pipeline_resources):
    """describe() reads the credentials before anything else; it ran outside the wrapper."""
    source = SalesforceApiSource(username="integration@example.com")
    message = failure(land_contacts(pipeline_resources, source))
    assert "Salesforce credentials are incomplete" in message
