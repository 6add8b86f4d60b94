"""The whole profile path on the sample data writes exactly the expected Redis hashes."""

import csv

import dagster as dg
import pytest

from personalization_pipeline.definitions import defs
from personalization_pipeline.keys import sync_epoch_key
from personalization_pipeline.resources.redis import RedisResource
from personalization_pipeline.resources.salesforce import SampleContactSource
from tests.conftest import SAMPLE_DIR, free_port


def expected_hashes() -> dict[str, dict[str, str]]:
    """What the sample files should produce, worked out from the CSVs without the pipeline."""
    with (SAMPLE_DIR / "income_enrichment.csv").open() as handle:
        income = {}
        for row in sorted(csv.DictReader(handle), key=lambda r: r["enriched_at"]):
            income[row["email"].lower()] = row["income_bracket"]
    latest: dict[str, dict[str, str]] = {}
    with (SAMPLE_DIR / "salesforce_contacts.csv").open() as handle:
        for contact in csv.DictReader(handle):
            user = contact["App_User_Id__c"]
            if contact["IsDeleted"] == "true" or not user.strip():
                continue
            if user not in latest or contact["SystemModstamp"] > latest[user]["SystemModstamp"]:
                latest[user] = contact
    hashes = {}
    for user, contact in latest.items():
        fields = {
            "email": contact["Email"],
            "membership_status": contact["Membership_Status__c"],
            "income_bracket": income.get(contact["Email"].lower(), ""),
        }
        # Empty cells are nulls, and RudderStack never writes a null field.
        hashes[f"user:{user}"] = {name: value for name, value in fields.items() if value}
    return hashes


def run_job(resources: dict) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("warehouse_actions_job")
    return job.execute_in_process(resources=resources, raise_on_error=False)


def test_job_writes_exactly_the_expected_hashes(pipeline_resources, redis_client):
    result = run_job(pipeline_resources)
    assert result.success
    expected = expected_hashes()
    assert len(expected) > 900
    keys = set(redis_client.scan_iter(count=1000))
    # Besides the profiles, only the sync's epoch marker (how it notices a Redis that lost data).
    assert keys == {*expected, sync_epoch_key("user_profiles")}
    for key, fields in expected.items():
        assert redis_client.hgetall(key) == fields, key


def test_the_two_example_users(pipeline_resources, redis_client):
    assert run_job(pipeline_resources).success
    assert redis_client.hgetall("user:U000001") == {
        "email": "maya.jensen.1@example.com",
        "membership_status": "loyalty_member",
    }
    assert redis_client.hgetall("user:U000002") == {
        "email": "quinn.garcia.2@example.com",
        "membership_status": "expired",
        "income_bracket": "level_2",
    }


def test_key_prefix_is_applied(pipeline_resources, redis_client, redis_url):
    resources = {**pipeline_resources, "redis": RedisResource(url=redis_url, prefix=" app ")}
    assert run_job(resources).success
    assert redis_client.hget("app:user:U000002", "income_bracket") == "level_2"
    assert not redis_client.exists("user:U000002")


def test_unreachable_redis_fails_naming_the_url_and_the_fix(pipeline_resources):
    url = f"redis://127.0.0.1:{free_port()}/0"
    resources = {**pipeline_resources, "redis": RedisResource(url=url)}
    with pytest.raises(
        Exception,
        match=rf"Redis at {url} refused the connection.*start redis-server or set REDIS_URL",
    ):
        defs.resolve_job_def("warehouse_actions_job").execute_in_process(resources=resources)


def test_a_user_on_two_contacts_gets_the_latest_one_and_is_counted(
    pipeline_resources, redis_client, tmp_path
):
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(
        (SAMPLE_DIR / "salesforce_contacts.csv").read_text().replace(",U000003,", ",U000001,")
    )
    resources = {**pipeline_resources, "salesforce": SampleContactSource(path=str(contacts))}
    result = run_job(resources)
    assert result.success
    (profiles,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "user_profiles"
    ]
    assert profiles.materialization.metadata["user_ids_on_several_contacts"].value == 1
    # Contact 3 (modified 2024-09-27) is newer than contact 1 (2024-07-13).
    assert redis_client.hget("user:U000001", "email") == "luis.ito.3@example.com"
