"""The Data Loader export source lands through the same page merge as an API full refresh."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb

from assets.sources import salesforce_contacts
from personalization_pipeline.resources.salesforce import SampleContactSource
from tests.conftest import SAMPLE_DIR

EXPORT = SAMPLE_DIR / "salesforce_contacts.csv"
HEADER, *ROWS = EXPORT.read_text().splitlines(keepends=True)


def land(resources: dict, path: Path, **settings) -> dg.ExecuteInProcessResult:
    source = SampleContactSource(path=str(path), **settings)
    return dg.materialize(
        [salesforce_contacts], resources={**resources, "salesforce": source}, raise_on_error=False
    )


def landed(resources: dict) -> dict[str, tuple]:
    with duckdb.connect(resources["warehouse"].path) as connection:
        rows = connection.execute("SELECT id, email, is_deleted FROM raw.salesforce_contact")
        return {row[0]: row[1:] for row in rows.fetchall()}


def test_contacts_missing_from_a_newer_export_are_marked_deleted(pipeline_resources, tmp_path):
    assert land(pipeline_resources, EXPORT).success
    first = landed(pipeline_resources)
    assert len(first) == len(ROWS)

    kept, dropped = ROWS[10:], ROWS[:10]
    edited_id, edited_email = kept[0].split(",")[:2]
    newer = tmp_path / "newer.csv"
    newer.write_text(HEADER + "".join(kept).replace(edited_email, "new@example.com"))
    assert land(pipeline_resources, newer).success
    second = landed(pipeline_resources)
    assert {i for i, (_, deleted) in second.items() if not deleted} == {
        row.split(",")[0] for row in kept if not row.rstrip().endswith(",true")
    }, "the live contacts are exactly the export's"
    assert all(second[row.split(",")[0]][1] for row in dropped), "kept, marked deleted"
    assert second[edited_id][0] == "new@example.com"

    assert land(pipeline_resources, EXPORT).success
    assert landed(pipeline_resources) == first, "contacts back in the export are live again"


def test_the_delete_guard_applies_to_an_export_by_default(pipeline_resources, tmp_path):
    assert land(pipeline_resources, EXPORT).success
    half = tmp_path / "half.csv"
    half.write_text(HEADER + "".join(ROWS[:500]))
    result = land(pipeline_resources, half)
    assert not result.success
    message = result.failure_data_for_node("salesforce_contacts").error.message
    assert "The full refresh read 500 contacts and would mark" in message
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    deleted = {i for i, (_, is_deleted) in landed(pipeline_resources).items() if is_deleted}
    assert deleted == {row.split(",")[0] for row in ROWS if row.rstrip().endswith(",true")}
    assert land(pipeline_resources, half, max_delete_fraction=1).success, "when told to"


def test_an_export_never_sets_the_api_cursor(pipeline_resources):
    """Switching a demo warehouse to real credentials must not skip contacts older than the
    sample data's newest SystemModstamp."""
    assert land(pipeline_resources, EXPORT).success
    with duckdb.connect(pipeline_resources["warehouse"].path) as connection:
        assert connection.execute("SELECT count(*) FROM salesforce_state.cursor").fetchone() == (0,)
