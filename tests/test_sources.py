"""The source assets land the sample files in DuckDB, and bad files fail with a useful message."""

import csv
import logging
import re
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from assets.activation import redis_user_profiles
from assets.sources import income_enrichment, salesforce_contacts
from assets.warehouse import user_profiles
from personalization_pipeline.definitions import defs
from personalization_pipeline.resources.enrichment import EnrichmentFileResource
from personalization_pipeline.resources.salesforce import SampleContactSource
from tests.conftest import SAMPLE_DIR


def metadata_of(result: dg.ExecuteInProcessResult, key: str) -> dict:
    (event,) = [
        e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == key
    ]
    return {name: value.value for name, value in event.materialization.metadata.items()}


def sample_contacts() -> list[dict[str, str]]:
    with (SAMPLE_DIR / "salesforce_contacts.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_salesforce_contacts_lands_every_contact_with_types(pipeline_resources):
    result = dg.materialize([salesforce_contacts], resources=pipeline_resources)
    contacts = sample_contacts()
    metadata = metadata_of(result, "salesforce_contacts")
    assert metadata["dagster/row_count"] == len(contacts) == 1000
    assert metadata["deleted_contacts"] == sum(c["IsDeleted"] == "true" for c in contacts)
    assert metadata["contacts_without_user_id"] == sum(
        c["App_User_Id__c"] == "" and c["IsDeleted"] == "false" for c in contacts
    )
    assert metadata["contacts_without_user_id"] > 0
    with duckdb.connect(pipeline_resources["warehouse"].path) as connection:
        row = connection.execute(
            "SELECT user_id, email, membership_status, system_modstamp::VARCHAR, is_deleted "
            "FROM raw.salesforce_contact WHERE id = '003Dn0000000001AAA'"
        ).fetchone()
    assert row == (
        "U000001",
        "maya.jensen.1@example.com",
        "loyalty_member",
        "2024-07-13 12:26:00",
        False,
    )


def test_rerun_replaces_instead_of_duplicating(pipeline_resources):
    dg.materialize([salesforce_contacts], resources=pipeline_resources)
    dg.materialize([salesforce_contacts], resources=pipeline_resources)
    with duckdb.connect(pipeline_resources["warehouse"].path) as connection:
        assert connection.execute("SELECT count(*) FROM raw.salesforce_contact").fetchone() == (
            1000,
        )


def test_income_enrichment_loads_csv(pipeline_resources):
    result = dg.materialize([income_enrichment], resources=pipeline_resources)
    with (SAMPLE_DIR / "income_enrichment.csv").open() as handle:
        expected = sum(1 for _ in csv.DictReader(handle))
    assert metadata_of(result, "income_enrichment")["dagster/row_count"] == expected


def test_income_enrichment_loads_parquet(pipeline_resources, tmp_path: Path):
    parquet = tmp_path / "income.parquet"
    duckdb.sql(
        f"COPY (SELECT * FROM read_csv('{SAMPLE_DIR / 'income_enrichment.csv'}')) TO '{parquet}'"
    )
    resources = {**pipeline_resources, "income_file": EnrichmentFileResource(path=str(parquet))}
    dg.materialize([income_enrichment], resources=resources)
    with duckdb.connect(pipeline_resources["warehouse"].path) as connection:
        assert connection.execute(
            "SELECT income_bracket FROM raw.income_enrichment "
            "WHERE email = 'quinn.garcia.2@example.com'"
        ).fetchone() == ("level_2",)


def test_income_file_missing_a_column_names_file_column_and_columns_found(
    pipeline_resources, tmp_path: Path
):
    bad = tmp_path / "income.csv"
    bad.write_text("email,bracket\na@example.com,level_1\n")
    resources = {**pipeline_resources, "income_file": EnrichmentFileResource(path=str(bad))}
    with pytest.raises(
        Exception,
        match=rf"{bad} is missing required column\(s\) income_bracket; "
        r"columns found: email, bracket",
    ):
        dg.materialize([income_enrichment], resources=resources)


def test_contact_export_missing_a_column_fails_at_once_without_retries(
    pipeline_resources, tmp_path: Path
):
    bad = tmp_path / "contacts.csv"
    bad.write_text("Id,Email\n003,a@example.com\n")
    resources = {**pipeline_resources, "salesforce": SampleContactSource(path=str(bad))}
    result = dg.materialize([salesforce_contacts], resources=resources, raise_on_error=False)
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert re.search(
        r"missing required column.*FirstName.*columns found: Id, Email",
        failure.step_failure_data.user_failure_data.description,
    )
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


@pytest.mark.parametrize("kept_rows", [0, 100])
def test_an_empty_or_truncated_income_drop_is_refused_and_the_last_one_kept(
    pipeline_resources, redis_client, tmp_path: Path, kept_rows: int
):
    """Whichever source starts the next run, income brackets must not vanish from Redis."""
    job = defs.resolve_job_def("warehouse_actions_job")
    assert job.execute_in_process(resources=pipeline_resources).success
    lines = (SAMPLE_DIR / "income_enrichment.csv").read_text().splitlines(keepends=True)
    truncated = tmp_path / "income.csv"
    truncated.write_text("".join(lines[: 1 + kept_rows]))
    resources = {**pipeline_resources, "income_file": EnrichmentFileResource(path=str(truncated))}

    refused = dg.materialize([income_enrichment], resources=resources, raise_on_error=False)
    (failure,) = [e for e in refused.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.user_failure_data.description
    assert "raw.income_enrichment keeps the previous drop" in message
    assert not [e for e in refused.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]

    # A contacts-triggered run afterwards still sees the last good drop.
    rerun = dg.materialize(
        [salesforce_contacts, income_enrichment, user_profiles, redis_user_profiles],
        selection=[salesforce_contacts, user_profiles, redis_user_profiles],
        resources=resources,
    )
    assert rerun.success
    assert redis_client.hget("user:U000002", "income_bracket") == "level_2"
    with duckdb.connect(pipeline_resources["warehouse"].path) as connection:
        (rows,) = connection.execute("SELECT count(*) FROM raw.income_enrichment").fetchone()
    assert rows == len(lines) - 1


def test_conflicting_income_rows_follow_the_documented_rule_and_are_counted(
    pipeline_resources, tmp_path: Path
):
    """One email in two cases with two brackets: the alphabetically first used to win, silently."""
    income = tmp_path / "income.csv"
    income.write_text(
        "email,income_bracket,enriched_at\n"
        "maya.jensen.1@example.com,level_2,2024-06-01\n"
        "Maya.Jensen.1@example.com,level_4,2024-06-01\n"  # same date: the later line wins
        "quinn.garcia.2@example.com,level_5,2024-07-01\n"
        "QUINN.GARCIA.2@example.com,level_1,2024-06-01\n"  # the newest enriched_at wins first
        "luis.ito.3@example.com,level_3,\n"
        "luis.ito.3@example.com,level_3,\n"  # the same bracket twice is no conflict
    )
    resources = {**pipeline_resources, "income_file": EnrichmentFileResource(path=str(income))}
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [salesforce_contacts, income_enrichment, user_profiles],
        resources=resources,
        instance=instance,
    )
    assert metadata_of(result, "income_enrichment")["emails_with_conflicting_brackets"] == 2
    warnings = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.level == logging.WARNING
    ]
    assert any(
        "2 emails appear with different income brackets" in message
        and "maya.jensen.1@example.com: line 2: level_2 (2024-06-01), line 3: level_4 (2024-06-01)"
        in message
        for message in warnings
    ), warnings
    with duckdb.connect(pipeline_resources["warehouse"].path) as connection:
        brackets = dict(
            connection.execute(
                "SELECT user_id, income_bracket FROM analytics.user_profiles "
                "WHERE user_id IN ('U000001', 'U000002', 'U000003')"
            ).fetchall()
        )
    assert brackets == {"U000001": "level_4", "U000002": "level_5", "U000003": "level_3"}
