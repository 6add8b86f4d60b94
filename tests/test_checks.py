"""Asset checks pass on good data, fail on bad data, and a failure blocks the Redis sync."""

import logging
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from assets.activation import redis_user_profiles, redis_user_profiles_readback
from assets.warehouse import user_id_valid, user_profiles
from personalization_pipeline.definitions import defs
from personalization_pipeline.resources.enrichment import EnrichmentFileResource
from personalization_pipeline.resources.rules import ProfileRulesResource
from personalization_pipeline.resources.salesforce import SampleContactSource
from tests.conftest import SAMPLE_DIR


def run_profile_path(resources: dict, instance: dg.DagsterInstance | None = None):
    return defs.resolve_job_def("warehouse_actions_job").execute_in_process(
        resources=resources, instance=instance, raise_on_error=False
    )


def evaluations(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def edited_copy(source: Path, directory: Path, old: str, new: str, count: int = 1) -> str:
    target = directory / source.name
    target.write_text(source.read_text().replace(old, new, count))
    return str(target)


def test_every_check_passes_on_the_sample_data(pipeline_resources):
    result = run_profile_path(pipeline_resources)
    assert result.success
    checks = evaluations(result)
    assert set(checks) == {
        "user_id_valid",
        "membership_status_allowed",
        "income_bracket_format",
        "shrink_guard",
        "readback",
    }
    assert all(check.passed for check in checks.values())
    # A passing check shows the rule it holds, not an empty description.
    assert checks["user_id_valid"].description == (
        "Holds: every user_id is set, unpadded and unique (it is the Redis key)"
    )
    assert checks["readback"].description == "100 sampled keys equal the warehouse, field by field"
    assert checks["readback"].metadata["sampled"].value == 100


@pytest.mark.parametrize(
    ("check_name", "resource_key", "sample_file", "old", "bad_value"),
    [
        (
            "membership_status_allowed",
            "salesforce",
            "salesforce_contacts.csv",
            ",loyalty_member,U000001,",
            "gold",
        ),
        (
            "income_bracket_format",
            "income_file",
            "income_enrichment.csv",
            "quinn.garcia.2@example.com,level_2",
            "Level 9",
        ),
    ],
)
def test_a_failed_value_check_blocks_the_redis_sync(
    pipeline_resources,
    redis_client,
    tmp_path,
    check_name,
    resource_key,
    sample_file,
    old,
    bad_value,
):
    new = old.replace("loyalty_member" if resource_key == "salesforce" else "level_2", bad_value)
    path = edited_copy(SAMPLE_DIR / sample_file, tmp_path, old, new)
    resource = (SampleContactSource if resource_key == "salesforce" else EnrichmentFileResource)(
        path=path
    )
    result = run_profile_path({**pipeline_resources, resource_key: resource})
    assert not result.success
    failed = evaluations(result)[check_name]
    assert not failed.passed
    assert failed.metadata["violations"].value == 1
    assert f"| {bad_value} | 1 |" in failed.metadata["examples"].value
    assert redis_client.dbsize() == 0, "the sync must not run after a failed blocking check"


def user_id_check_on(resources: dict, user_ids: str) -> dg.AssetCheckEvaluation:
    """The user-id check on a user_profiles table holding only the SQL VALUES ``user_ids``."""
    with duckdb.connect(resources["warehouse"].path) as connection:
        connection.execute(
            "CREATE SCHEMA analytics; CREATE TABLE analytics.user_profiles AS "
            f"SELECT * FROM (VALUES {user_ids}) AS t(user_id)"
        )
    result = dg.materialize(
        [user_profiles, user_id_valid],
        resources=resources,
        selection=dg.AssetSelection.checks(user_id_valid),
        raise_on_error=False,
    )
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_user_id_check_catches_duplicates_and_blanks(pipeline_resources):
    evaluation = user_id_check_on(pipeline_resources, "('u1'), ('u1'), ('u2'), (NULL), ('  ')")
    assert not evaluation.passed
    assert evaluation.metadata["violations"].value == 4  # two u1 rows, the null, the blank


def test_shrink_guard_blocks_a_collapsed_extract_until_the_limit_is_raised(
    pipeline_resources, redis_client, tmp_path
):
    instance = dg.DagsterInstance.ephemeral()
    assert run_profile_path(pipeline_resources, instance).success

    half = tmp_path / "contacts.csv"
    lines = (SAMPLE_DIR / "salesforce_contacts.csv").read_text().splitlines(keepends=True)
    half.write_text("".join(lines[:501]).replace("maya.jensen.1@", "maya.new@"))
    # The export's own delete guard would refuse first; this test is about the profile guard.
    source = SampleContactSource(path=str(half), max_delete_fraction=1)
    shrunk = {**pipeline_resources, "salesforce": source}
    blocked = run_profile_path(shrunk, instance)
    guard = evaluations(blocked)["shrink_guard"]
    assert not blocked.success and not guard.passed
    assert guard.metadata["baseline_row_count"].value == 962
    assert "raise PROFILE_MAX_SHRINK" in guard.description
    assert redis_client.hget("user:U000001", "email") == "maya.jensen.1@example.com"

    allowed = {**shrunk, "rules": ProfileRulesResource(max_shrink_fraction=0.6)}
    assert run_profile_path(allowed, instance).success
    assert redis_client.hget("user:U000001", "email") == "maya.new@example.com"


def test_readback_check_finds_drift_in_redis(pipeline_resources, redis_client):
    assert run_profile_path(pipeline_resources).success
    redis_client.hset("user:U000002", "income_bracket", "level_5")
    redis_client.hdel("user:U000003", "email")
    resources = {**pipeline_resources, "rules": ProfileRulesResource(readback_sample_size=5000)}
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [redis_user_profiles, redis_user_profiles_readback],
        resources=resources,
        selection=dg.AssetSelection.checks(redis_user_profiles_readback),
        raise_on_error=False,
        instance=instance,
    )
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["sampled"].value == 962
    assert evaluation.metadata["mismatches"].value == 2
    examples = evaluation.metadata["examples"].value
    assert "user:U000002" in examples
    # Emails are masked in the event log: "q***@example.com", never the address itself.
    assert "quinn.garcia.2@example.com" not in examples and "q***@example.com" in examples
    errors = [e for e in instance.all_logs(result.run_id) if e.level == logging.ERROR]
    assert any("2 of 962 sampled keys differ" in e.user_message for e in errors)


def test_readback_of_a_flushed_redis_fails_loudly(pipeline_resources, redis_client):
    assert run_profile_path(pipeline_resources).success
    redis_client.flushall()
    result = dg.materialize(
        [redis_user_profiles, redis_user_profiles_readback],
        resources=pipeline_resources,
        selection=dg.AssetSelection.checks(redis_user_profiles_readback),
        raise_on_error=False,
    )
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.metadata["mismatches"].value == 100


def test_sync_ignores_fields_it_does_not_own(pipeline_resources, redis_client):
    """Real-time traits in the same hash (e.g. recent purchases) are not drift."""
    assert run_profile_path(pipeline_resources).success
    redis_client.hset("user:U000002", "recent_five_purchases.purchase_1", "SKU-1")
    result = dg.materialize(
        [redis_user_profiles, redis_user_profiles_readback],
        resources={**pipeline_resources, "rules": ProfileRulesResource(readback_sample_size=5000)},
        selection=dg.AssetSelection.checks(redis_user_profiles_readback),
    )
    assert result.get_asset_check_evaluations()[0].passed


def test_syncs_without_a_rebuild_refuse_profiles_that_failed_their_checks(
    pipeline_resources, redis_client, tmp_path
):
    """The verify and reconcile schedules sync Redis from user_profiles as it stands; after a
    failed blocking check that table holds the rejected build, so they must refuse it."""
    instance = dg.DagsterInstance.ephemeral()
    assert run_profile_path(pipeline_resources, instance).success
    bad = edited_copy(
        SAMPLE_DIR / "salesforce_contacts.csv",
        tmp_path,
        ",loyalty_member,U000001,",
        ",gold,U000001,",
    )
    resources = {**pipeline_resources, "salesforce": SampleContactSource(path=bad)}
    assert not run_profile_path(resources, instance).success
    # A later run that dies before its checks leaves them planned; the failure still counts.
    unreadable = tmp_path / "unreadable.csv"
    unreadable.write_text("Id\n")
    broken = {**pipeline_resources, "salesforce": SampleContactSource(path=str(unreadable))}
    assert not run_profile_path(broken, instance).success

    verify = defs.resolve_job_def("redis_profiles_job").execute_in_process(
        resources=resources, instance=instance, raise_on_error=False
    )
    assert not verify.success
    (failure,) = [e for e in verify.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "user_profiles failed membership_status_allowed" in (
        failure.step_failure_data.user_failure_data.description
    )
    assert redis_client.hget("user:U000001", "membership_status") == "loyalty_member"

    assert run_profile_path(pipeline_resources, instance).success
    assert (
        defs.resolve_job_def("redis_profiles_job")
        .execute_in_process(resources=pipeline_resources, instance=instance)
        .success
    )


def test_a_run_that_failed_before_its_checks_does_not_block_or_break_the_sync(
    pipeline_resources, tmp_path
):
    """Its checks stay planned, never evaluated; the last finished evaluation decides."""
    instance = dg.DagsterInstance.ephemeral()
    assert run_profile_path(pipeline_resources, instance).success
    unreadable = tmp_path / "contacts.csv"
    unreadable.write_text("Id\n")
    broken = {**pipeline_resources, "salesforce": SampleContactSource(path=str(unreadable))}
    assert not run_profile_path(broken, instance).success
    assert (
        defs.resolve_job_def("redis_profiles_job")
        .execute_in_process(resources=pipeline_resources, instance=instance)
        .success
    )


def test_user_id_check_flags_ids_with_leading_or_trailing_spaces(pipeline_resources):
    """'U1 ' and 'U1' would be two Redis keys for one user; nothing said so."""
    evaluation = user_id_check_on(pipeline_resources, "('U1'), ('U1 '), (' U2'), ('U3\t')")
    assert not evaluation.passed
    assert evaluation.metadata["violations"].value == 3
    assert evaluation.metadata["user_ids_with_spaces"].value == 3
    assert "| 'U1 ' | 1 | leading or trailing space |" in evaluation.metadata["examples"].value
    assert evaluation.description == "3 rows with a null, blank, space-padded or duplicate user_id"
