"""Incremental Contact extraction against the local Salesforce server, into a DuckDB file."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import pytest

from personalization_pipeline.resources.salesforce import SalesforceApiSource
from personalization_pipeline.salesforce.client import (
    BulkJobFailed,
    RetryPolicy,
    SalesforceAuth,
    SalesforceClient,
    SalesforceConfigError,
    SalesforceQueryError,
)
from personalization_pipeline.salesforce.extract import (
    DELETED_CURSOR_NAME,
    DeleteGuardError,
    ExtractSettings,
    extract_contacts,
    read_cursor,
)
from personalization_pipeline.salesforce.mapping import FieldMappingError
from personalization_pipeline.testing.salesforce_server import (
    SalesforceServer,
    minutes_ago,
    to_minute,
)

FIELDS = SalesforceApiSource().fields
FAST = RetryPolicy(max_attempts=4, base_seconds=0.001, max_seconds=0.01)
SETTINGS = ExtractSettings(bulk_poll_seconds=0, query_batch_size=2000)


def password_auth(server: SalesforceServer) -> SalesforceAuth:
    creds = server.org.credentials
    return SalesforceAuth(
        username=creds.username, password=creds.password, security_token=creds.security_token
    )


@pytest.fixture
def warehouse(tmp_path):
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    yield connection
    connection.close()


def run(server, warehouse, auth=None, settings=SETTINGS, **kwargs):
    client = SalesforceClient(
        auth or password_auth(server), retry=FAST, session=server.session(), clock=server.org.now
    )
    return extract_contacts(client, warehouse, FIELDS, settings, **kwargs), client


def contacts(warehouse) -> dict[str, tuple]:
    rows = warehouse.execute(
        "SELECT id, user_id, email, membership_status, is_deleted FROM raw.salesforce_contact"
    ).fetchall()
    return {row[0]: row[1:] for row in rows}


def test_incremental_runs_with_inserts_updates_deletes_and_a_late_commit(
    salesforce_server, warehouse
):
    org = salesforce_server.org
    first = org.insert(
        LastName="A", Email="a@example.com", App_User_Id__c="u1", Membership_Status__c="Active"
    )
    second = org.insert(LastName="B", Email="b@example.com", App_User_Id__c="u2")
    result, _ = run(salesforce_server, warehouse)
    assert (result.inserted, result.updated, result.rows_fetched, result.mode) == (2, 0, 2, "rest")
    assert result.cursor_before is None and result.cursor_after is not None
    assert contacts(warehouse)[first] == ("u1", "a@example.com", "Active", False)

    org.update(first, Membership_Status__c="Lapsed")
    org.delete(second)
    third = org.insert(LastName="C", App_User_Id__c="u3")
    # Committed late: its SystemModstamp is older than the cursor the last run saved.
    late_modstamp = minutes_ago(3)
    assert late_modstamp.replace(tzinfo=None) < result.cursor_after
    late = org.insert(LastName="Late", App_User_Id__c="u4", modstamp=late_modstamp)
    result2, _ = run(salesforce_server, warehouse)
    assert result2.cursor_before == result.cursor_after
    assert (result2.inserted, result2.updated, result2.marked_deleted) == (2, 2, 1)
    landed = contacts(warehouse)
    assert landed[first][2] == "Lapsed"
    assert landed[second][3] is True
    assert third in landed and late in landed
    assert result2.cursor_after > result.cursor_after

    result3, _ = run(salesforce_server, warehouse)
    # Inside the lookback window everything is re-read, and nothing changes.
    assert (result3.inserted, result3.updated, result3.marked_deleted) == (0, 0, 0)
    assert result3.cursor_after == result2.cursor_after


def test_full_refresh_marks_contacts_salesforce_no_longer_returns(salesforce_server, warehouse):
    org = salesforce_server.org
    keep, gone, *_ = org.insert_many(10)
    run(salesforce_server, warehouse)
    org.purge(gone)  # hard delete: invisible even to queryAll
    result, _ = run(salesforce_server, warehouse, full_refresh=True)
    assert result.full_refresh and result.marked_deleted == 1
    assert contacts(warehouse)[gone][3] is True and contacts(warehouse)[keep][3] is False


def deleted_cursor(warehouse):
    return read_cursor(warehouse, DELETED_CURSOR_NAME)


def test_hard_deletes_are_read_incrementally_from_the_delete_log(salesforce_server, warehouse):
    org = salesforce_server.org
    gone, binned, kept, *_ = org.insert_many(10)
    first, _ = run(salesforce_server, warehouse)
    # A first load reads every contact there is; deletes are read from its start (less the
    # lookback) on.
    assert first.deleted_cursor_after == deleted_cursor(warehouse)
    assert first.deleted_cursor_after < first.cursor_after

    org.purge(gone)  # a hard delete of a live contact
    org.delete(binned)
    org.purge(binned)  # deleted, then the Recycle Bin emptied, between two runs
    org.advance(minutes=2)  # getDeleted reports whole minutes that have passed
    second, _ = run(salesforce_server, warehouse)
    assert (second.full_refresh, second.hard_deletes_gap) == (False, None)
    assert (second.marked_deleted, second.inserted, second.updated) == (2, 0, 0)
    landed = contacts(warehouse)
    assert landed[gone][3] is True and landed[binned][3] is True and landed[kept][3] is False
    # The next window starts where Salesforce's answer said it covered, a whole minute.
    covered = to_minute(org.now()).replace(tzinfo=None)
    assert second.deleted_cursor_after == deleted_cursor(warehouse) == covered
    assert second.metadata()["deleted_cursor_after"] == str(covered)

    org.advance(minutes=2)
    third, _ = run(salesforce_server, warehouse)
    assert third.marked_deleted == 0 and third.deleted_cursor_after > covered


def test_soft_deletes_and_undeletes_agree_between_the_two_reads(salesforce_server, warehouse):
    org = salesforce_server.org
    deleted, restored, _ = org.insert_many(3)
    run(salesforce_server, warehouse)
    org.delete(deleted)
    org.delete(restored)
    org.advance(minutes=1)
    org.undelete(restored)  # the delete log may still list it, with its older date
    org.advance(minutes=2)
    result, _ = run(salesforce_server, warehouse)
    # queryAll brings both as updates; getDeleted then finds the one delete already marked.
    assert (result.updated, result.marked_deleted) == (2, 1)
    landed = contacts(warehouse)
    assert landed[deleted][3] is True and landed[restored][3] is False


@pytest.mark.parametrize(
    "lose_the_log, gap",
    [
        (lambda org, warehouse: org.purge_delete_log(), "Salesforce's delete log now starts at"),
        (lambda org, warehouse: org.advance(days=31), "Salesforce refused getDeleted from"),
        (
            lambda org, warehouse: setattr(org, "deleted_id_limit", 0),
            "Salesforce refused getDeleted from",
        ),
        (
            lambda org, warehouse: warehouse.execute(
                "DELETE FROM salesforce_state.cursor WHERE name = ?", [DELETED_CURSOR_NAME]
            ),
            "hard deletes have never been read into this warehouse",
        ),
    ],
    ids=[
        "delete log purged",
        "past the 30-day window",
        "too many deletes",
        "warehouse from before",
    ],
)
def test_when_salesforce_cannot_vouch_for_deletes_the_run_is_a_full_refresh_and_says_so(
    salesforce_server, warehouse, lose_the_log, gap
):
    org = salesforce_server.org
    gone, *_ = org.insert_many(10)
    run(salesforce_server, warehouse)
    org.purge(gone)
    lose_the_log(org, warehouse)
    org.advance(minutes=2)
    warnings = []
    result, _ = run(salesforce_server, warehouse, warn=warnings.append)
    assert result.hard_deletes_gap.startswith(gap), result.hard_deletes_gap
    assert result.hard_deletes_gap.endswith(
        "so contacts hard-deleted in between may be missing: this run is a full refresh, which "
        "marks every contact Salesforce no longer returns deleted"
    )
    assert warnings == [result.hard_deletes_gap]
    assert result.metadata()["hard_deletes_gap"] == result.hard_deletes_gap
    assert result.full_refresh and result.marked_deleted == 1 and contacts(warehouse)[gone][3]
    # Deletes are read again from the refresh's start less the lookback, or from where the
    # purged log is whole again if that is later.
    restart = deleted_cursor(warehouse)
    assert result.deleted_cursor_after == restart
    assert timedelta(0) < org.now().replace(tzinfo=None) - restart < timedelta(minutes=11)

    org.advance(minutes=3)
    org.deleted_id_limit = 600_000  # the mass delete, if any, is behind us
    after, _ = run(salesforce_server, warehouse, warn=warnings.append)
    assert (after.full_refresh, after.hard_deletes_gap, len(warnings)) == (False, None, 1)


def test_a_refused_refresh_leaves_the_gap_to_the_next_run(salesforce_server, warehouse):
    org = salesforce_server.org
    ids = org.insert_many(4)
    run(salesforce_server, warehouse)
    org.purge(ids[0])
    org.purge_delete_log()
    org.advance(minutes=2)
    with pytest.raises(DeleteGuardError):
        run(salesforce_server, warehouse)  # 1 of 4 is more than the 20% a refresh may delete
    org.advance(minutes=2)
    allowed = ExtractSettings(bulk_poll_seconds=0, max_delete_fraction=1)
    result, _ = run(salesforce_server, warehouse, settings=allowed)
    assert result.hard_deletes_gap and result.full_refresh and result.marked_deleted == 1


def test_full_refresh_that_sees_too_few_contacts_marks_none_deleted(salesforce_server, warehouse):
    org = salesforce_server.org
    ids = org.insert_many(10)
    run(salesforce_server, warehouse)
    for gone in ids[:3]:
        org.purge(gone)
    org.update(ids[3], Email="changed@example.com")
    with pytest.raises(DeleteGuardError) as refused:
        run(salesforce_server, warehouse, full_refresh=True)
    assert str(refused.value).startswith(
        "The full refresh read 7 contacts and would mark 3 of the 10 live contacts deleted "
        "(30%, more than SALESFORCE_MAX_DELETE_FRACTION=0.2)."
    )
    assert "set SALESFORCE_MAX_DELETE_FRACTION=1 for one run" in str(refused.value)
    landed = contacts(warehouse)
    assert not any(row[3] for row in landed.values()), "nothing marked deleted"
    assert landed[ids[3]][1] == "changed@example.com", "what was read is landed"

    allowed = ExtractSettings(bulk_poll_seconds=0, max_delete_fraction=1)
    result, _ = run(salesforce_server, warehouse, settings=allowed, full_refresh=True)
    assert result.marked_deleted == 3
    assert {id_ for id_, row in contacts(warehouse).items() if row[3]} == set(ids[:3])


def test_full_refresh_of_an_empty_org_is_refused(salesforce_server, warehouse):
    org = salesforce_server.org
    ids = org.insert_many(3)
    run(salesforce_server, warehouse)
    for contact in ids:
        org.purge(contact)
    with pytest.raises(DeleteGuardError, match="read 0 contacts and would mark 3 of the 3 live"):
        run(salesforce_server, warehouse, full_refresh=True)


def test_paging_past_2000_rows_streams_pages(salesforce_server, warehouse):
    salesforce_server.org.insert_many(4100)
    result, client = run(salesforce_server, warehouse)
    assert (result.rows_fetched, result.pages, result.inserted) == (4100, 3, 4100)
    assert len(contacts(warehouse)) == 4100
    # describe + count + 3 pages
    assert client.usage.calls == 5 and salesforce_server.org.api_used == 5


def test_bulk_path_above_the_threshold(salesforce_server, warehouse):
    org = salesforce_server.org
    org.insert_many(1200)
    org.delete(org.insert(LastName="Deleted"))
    settings = ExtractSettings(bulk_threshold=1000, bulk_page_size=500, bulk_poll_seconds=0)
    result, _ = run(salesforce_server, warehouse, settings=settings)
    assert (result.mode, result.rows_fetched, result.pages, result.inserted) == (
        "bulk",
        1201,
        3,
        1201,
    )
    landed = contacts(warehouse)
    assert sum(row[3] for row in landed.values()) == 1
    assert warehouse.execute(
        "SELECT count(*) FROM raw.salesforce_contact WHERE email IS NULL"
    ).fetchone() == (1,)
    assert (
        result.cursor_after
        == warehouse.execute("SELECT max(system_modstamp) FROM raw.salesforce_contact").fetchone()[
            0
        ]
    )


def bulk_client(server, sleeps):
    return SalesforceClient(
        password_auth(server), retry=FAST, session=server.session(), sleep=sleeps.append
    )


def test_a_failed_or_aborted_bulk_job_is_created_again_within_the_run(salesforce_server, warehouse):
    org = salesforce_server.org
    org.insert_many(300)
    org.fail_bulk_jobs(1, state="Failed")
    org.fail_bulk_jobs(1, state="Aborted")
    sleeps = []
    settings = ExtractSettings(bulk_threshold=100, bulk_poll_seconds=0)
    result = extract_contacts(bulk_client(salesforce_server, sleeps), warehouse, FIELDS, settings)
    assert (result.mode, result.rows_fetched, len(contacts(warehouse))) == ("bulk", 300, 300)
    assert len(org.jobs) == 3, "two jobs failed, the third completed"
    backoff = [s for s in sleeps if s > 0]  # polls wait 0 here; the retry policy's delays do not
    assert len(backoff) == 2 and 0.00075 <= backoff[0] <= 0.00125 <= backoff[1] <= 0.0025


def test_bulk_jobs_failing_on_every_attempt_end_the_run_naming_the_setting(
    salesforce_server, warehouse
):
    org = salesforce_server.org
    org.insert_many(300)
    org.fail_bulk_jobs(FAST.max_attempts, message="QUERY_TIMEOUT: Your query ran too long")
    settings = ExtractSettings(bulk_threshold=100, bulk_poll_seconds=0)
    with pytest.raises(BulkJobFailed) as failed:
        extract_contacts(bulk_client(salesforce_server, []), warehouse, FIELDS, settings)
    assert "ended Failed (QUERY_TIMEOUT: Your query ran too long); 4 job(s) in a row failed" in str(
        failed.value
    )
    assert "SALESFORCE_MAX_ATTEMPTS=4" in str(failed.value) and len(org.jobs) == 4


def test_bulk_polling_starts_fast_and_backs_off_to_the_configured_wait(
    salesforce_server, warehouse
):
    org = salesforce_server.org
    org.insert_many(300)
    org.bulk_polls_before_complete = 4  # the job reports InProgress four times
    sleeps = []
    settings = ExtractSettings(bulk_threshold=100, bulk_poll_seconds=1.5)
    extract_contacts(bulk_client(salesforce_server, sleeps), warehouse, FIELDS, settings)
    assert sleeps == [0.25, 0.5, 1.0, 1.5, 1.5]


def test_a_bulk_job_that_never_finishes_ends_the_run(salesforce_server, warehouse):
    org = salesforce_server.org
    org.insert_many(300)
    org.bulk_polls_before_complete = 10**6
    client = bulk_client(salesforce_server, [])
    client.bulk_job_timeout_seconds = 0
    settings = ExtractSettings(bulk_threshold=100, bulk_poll_seconds=0)
    with pytest.raises(BulkJobFailed, match=r"is still InProgress after 0s"):
        extract_contacts(client, warehouse, FIELDS, settings)


def test_expired_session_mid_run_logs_in_again(salesforce_server, warehouse):
    org = salesforce_server.org
    org.insert_many(2500)
    org.inject("expired_session", after=2)  # describe, count, then the session dies
    result, _ = run(salesforce_server, warehouse)
    assert result.rows_fetched == 2500
    assert org.logins.count("soap") == 2

    # Bulk calls are not renewed by simple-salesforce; the client logs in again itself.
    org.inject("expired_session", path_contains="/results")
    settings = ExtractSettings(bulk_threshold=100, bulk_poll_seconds=0)
    bulk, _ = run(salesforce_server, warehouse, settings=settings, full_refresh=True)
    assert bulk.mode == "bulk" and bulk.rows_fetched == 2500


def test_api_budget_stop_keeps_progress_and_the_next_run_resumes(salesforce_server, warehouse):
    org = salesforce_server.org
    org.insert_many(5000)
    org.set_api_usage(796, 1000)
    settings = ExtractSettings(api_budget_share=0.8, bulk_poll_seconds=0)
    result, _ = run(salesforce_server, warehouse, settings=settings)
    # describe 797, count 798, first page 799, second page 800/1000: stop at 80%
    assert result.stopped_early and "80%" in result.stopped_early
    assert result.rows_fetched == 4000 and len(contacts(warehouse)) == 4000
    assert result.cursor_after is not None

    org.set_api_usage(10, 1000)  # a new day
    resumed, _ = run(salesforce_server, warehouse, settings=settings)
    assert resumed.stopped_early is None
    assert resumed.cursor_before == result.cursor_after
    assert len(contacts(warehouse)) == 5000 and resumed.inserted == 1000


def test_request_limit_exceeded_is_retried_then_ends_the_run_keeping_progress(
    salesforce_server, warehouse
):
    org = salesforce_server.org
    org.insert_many(10)
    org.inject("request_limit", times=2, after=1)
    result, _ = run(salesforce_server, warehouse)
    assert result.stopped_early is None and result.inserted == 10
    org.inject("request_limit", times=10, after=2)
    stopped, _ = run(salesforce_server, warehouse)
    assert "REQUEST_LIMIT_EXCEEDED" in stopped.stopped_early


def test_describe_mismatch_names_the_closest_fields(salesforce_server, warehouse):
    fields = dict(FIELDS)
    fields.pop("Membership_Status__c")
    fields["Membership_Stat__c"] = "membership_status"
    client = SalesforceClient(
        password_auth(salesforce_server), retry=FAST, session=salesforce_server.session()
    )
    with pytest.raises(
        FieldMappingError, match=r"Membership_Stat__c .*closest: Membership_Status__c"
    ):
        extract_contacts(client, warehouse, fields, SETTINGS)
    # Field names are case-insensitive in SOQL, so a different case is not a mismatch.
    fields = {name.lower(): column for name, column in FIELDS.items()}
    assert extract_contacts(client, warehouse, fields, SETTINGS).rows_fetched == 0


@pytest.mark.parametrize(
    "settings, columns",
    [
        ({"user_id_field": "Email"}, "user_id and email"),
        ({"first_name_field": "lastname"}, "first_name and last_name"),
        ({"membership_status_field": "ID"}, "id and membership_status"),
    ],
)
def test_one_field_for_two_columns_is_refused(settings, columns):
    with pytest.raises(SalesforceConfigError, match=f"mapped to two columns, {columns};"):
        assert SalesforceApiSource(**settings).fields


def test_malformed_query_fails_fast_with_salesforces_message(salesforce_server, warehouse):
    client = SalesforceClient(
        password_auth(salesforce_server), retry=FAST, session=salesforce_server.session()
    )
    calls = salesforce_server.org.api_calls()
    with pytest.raises(
        SalesforceQueryError, match=r"(?s)MALFORMED_QUERY: SELECT.*unexpected token: <EOF>"
    ):
        client.query_page("SELECT Id FROM Contact WHERE SystemModstamp >", 2000)
    with pytest.raises(SalesforceQueryError, match=r"(?s)INVALID_FIELD.*No such column 'Emial'"):
        client.query_page("SELECT Id, Emial FROM Contact", 2000)
    assert salesforce_server.org.api_calls() == calls + 2, "no retries"


def test_server_errors_and_dropped_connections_succeed_on_retry(salesforce_server, warehouse):
    org = salesforce_server.org
    org.insert_many(2100)
    org.inject("server_error", times=2, after=2)
    org.inject("drop", times=1, path_contains="-2000")
    sleeps = []
    client = SalesforceClient(
        password_auth(salesforce_server),
        retry=FAST,
        session=salesforce_server.session(),
        sleep=sleeps.append,
    )
    result = extract_contacts(client, warehouse, FIELDS, SETTINGS)
    assert result.rows_fetched == 2100 and len(sleeps) == 3
    assert all(0 < s <= 0.0125 for s in sleeps)

    org.inject("server_error", times=10)
    with pytest.raises(Exception, match="UNKNOWN_EXCEPTION"):
        extract_contacts(client, warehouse, FIELDS, SETTINGS)


def test_lookback_is_configurable(salesforce_server, warehouse):
    org = salesforce_server.org
    org.insert_many(3)
    run(salesforce_server, warehouse)
    org.insert(LastName="Very late", modstamp=minutes_ago(30))
    short, _ = run(salesforce_server, warehouse, settings=ExtractSettings(lookback_minutes=10))
    assert short.inserted == 0
    wide, _ = run(salesforce_server, warehouse, settings=ExtractSettings(lookback_minutes=60))
    assert wide.inserted == 1


@pytest.mark.parametrize(
    "flow", ["password", "oauth_password", "jwt_bearer", "client_credentials", "session"]
)
def test_every_auth_flow_extracts(salesforce_server, warehouse, jwt_keypair, tmp_path, flow):
    creds = salesforce_server.org.credentials
    key_file = tmp_path / "jwt.key"
    key_file.write_bytes(jwt_keypair[0])
    auth = {
        "password": password_auth(salesforce_server),
        "oauth_password": SalesforceAuth(
            username=creds.username,
            password=creds.password,
            security_token=creds.security_token,
            consumer_key=creds.consumer_key,
            consumer_secret=creds.consumer_secret,
        ),
        "jwt_bearer": SalesforceAuth(
            username=creds.username, consumer_key=creds.consumer_key, private_key_file=str(key_file)
        ),
        "client_credentials": SalesforceAuth(
            consumer_key=creds.consumer_key, consumer_secret=creds.consumer_secret, domain="acme.my"
        ),
        "session": SalesforceAuth(
            instance_url=salesforce_server.instance_url, session_id=salesforce_server.session_id()
        ),
    }[flow]
    assert auth.flow == flow and creds.password not in repr(auth)
    salesforce_server.org.insert_many(3)
    result, _ = run(salesforce_server, warehouse, auth=auth)
    assert result.inserted == 3
    if flow != "session":
        expected = "soap" if flow == "password" else flow
        assert salesforce_server.org.logins[1:] == [expected]  # [0]: the unused session id


def test_client_credentials_needs_a_my_domain(salesforce_server):
    auth = SalesforceAuth(consumer_key="k", consumer_secret="s", domain="login")
    with pytest.raises(SalesforceConfigError, match="SALESFORCE_DOMAIN"):
        SalesforceClient(auth, retry=FAST, session=salesforce_server.session())


def session_auth(server: SalesforceServer, session_id: str | None = None) -> SalesforceAuth:
    return SalesforceAuth(
        instance_url=server.instance_url, session_id=session_id or server.session_id()
    )


def test_a_session_id_refused_at_once_is_told_apart_from_one_that_expired_mid_run(
    salesforce_server, warehouse
):
    org = salesforce_server.org
    org.insert_many(2500)
    never_valid = session_auth(salesforce_server, "00DHs000001LoCa!AQmistyped")
    with pytest.raises(SalesforceConfigError) as refused:
        run(salesforce_server, warehouse, auth=never_valid)
    assert str(refused.value).startswith(
        "acme.my.salesforce.com refused SALESFORCE_SESSION_ID on the first call (Contact "
        "describe): the session id is mistyped, expired before this run, or belongs to another"
    )
    assert "expired during this run" not in str(refused.value)

    org.inject("expired_session", after=2)  # describe and count work, then the session dies
    with pytest.raises(SalesforceConfigError) as expired:
        run(salesforce_server, warehouse, auth=session_auth(salesforce_server))
    assert str(expired.value).startswith(
        "SALESFORCE_SESSION_ID expired during this run (query on acme.my.salesforce.com was "
        "refused after earlier calls worked), and a session id cannot be renewed"
    )
    assert "00DHs000001LoCa!AQmistyped" not in str(refused.value) + str(expired.value)


def test_session_login_warns_that_it_is_not_for_unattended_runs(salesforce_server):
    warnings, infos = [], []
    SalesforceClient(
        session_auth(salesforce_server),
        session=salesforce_server.session(),
        log=infos.append,
        warn=warnings.append,
    )
    assert len(warnings) == 1 and "not for unattended sensors and schedules" in warnings[0]
    SalesforceClient(
        password_auth(salesforce_server), session=salesforce_server.session(), warn=warnings.append
    )
    assert len(warnings) == 1, "login flows renew themselves: no warning"
