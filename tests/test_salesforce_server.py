"""The local Salesforce server answers unmodified simple-salesforce with real wire shapes."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import OrderedDict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
)

from personalization_pipeline.testing.salesforce_server import (
    SalesforceServer,
    minutes_ago,
    rest_datetime,
    to_minute,
)

FIXTURES = Path(__file__).parent / "fixtures" / "salesforce"
FIELDS = "Id, Email, SystemModstamp, IsDeleted"
PATTERNS = {
    "rest datetime": re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$"),
    "bulk datetime": re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"),
    "record id": re.compile(r"^[a-zA-Z0-9]{3}[a-zA-Z0-9]{15}$"),
    "record url": re.compile(r"^/services/data/v\d+\.\d/sobjects/Contact/[a-zA-Z0-9]{18}$"),
    "locator url": re.compile(r"^/services/data/v\d+\.\d/query/01g[\w]+-\d+$"),
}


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(), object_pairs_hook=OrderedDict)


def assert_same_shape(actual: Any, expected: Any, where: str = "$") -> None:
    """Same keys in the same order, same JSON types, nullable where the fixture has nulls, and
    strings of the same recognisable format (datetimes, ids, locators)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        assert list(actual) == list(expected), f"key order at {where}"
        for key in expected:
            assert_same_shape(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), where
        if expected and actual:
            for index, item in enumerate(actual):
                assert_same_shape(item, expected[0], f"{where}[{index}]")
    elif expected is None:
        # A null in a fixture marks a nullable field: the key is present, its value null or a
        # scalar (the key-order check above already proves the key is never omitted).
        assert actual is None or isinstance(actual, str | int | float | bool), where
    elif isinstance(expected, str):
        assert isinstance(actual, str), where
        for label, pattern in PATTERNS.items():
            if pattern.match(expected):
                assert pattern.match(actual), f"{where}: {actual!r} is not a {label}"
    else:
        assert type(actual) is type(expected), f"{where}: {actual!r} vs {expected!r}"


def assert_recorded(response: requests.Response, name: str) -> None:
    expected = fixture(name)
    assert response.status_code == expected["status"]
    for header, value in expected["headers"].items():
        assert header in response.headers, header
        if header == "Sforce-Limit-Info":
            assert re.fullmatch(r"api-usage=\d+/\d+", response.headers[header])
        else:
            assert response.headers[header] == value
    assert_same_shape(response.json(object_pairs_hook=OrderedDict), expected["body"])


@pytest.fixture
def api(salesforce_server: SalesforceServer) -> tuple[requests.Session, str]:
    """A raw HTTP session with a valid bearer token, to look at the bytes the client parses."""
    session = salesforce_server.session()
    session.headers.update(
        Authorization=f"Bearer {salesforce_server.session_id()}", **{"X-PrettyPrint": "1"}
    )
    return session, f"{salesforce_server.instance_url}/services/data/v59.0"


def test_responses_have_recorded_shapes(salesforce_server, api) -> None:
    session, base = api
    org = salesforce_server.org
    org.insert_many(2001)
    org.insert(LastName="Null Email", Email=None)
    org.delete(org.insert(LastName="Gone"))
    soql = f"SELECT {FIELDS} FROM Contact ORDER BY SystemModstamp ASC"

    first = session.get(f"{base}/queryAll/", params={"q": soql})
    assert_recorded(first, "query_first_page.json")
    page = first.json()
    assert page["totalSize"] == 2003 and len(page["records"]) == 2000
    last = session.get(salesforce_server.instance_url + page["nextRecordsUrl"])
    assert_recorded(last, "query_last_page.json")
    assert [r["IsDeleted"] for r in last.json()["records"]] == [False, False, True]
    assert last.json()["records"][1]["Email"] is None

    count = session.get(f"{base}/query", params={"q": "SELECT COUNT() FROM Contact"})
    assert_recorded(count, "query_count.json")
    assert count.json()["totalSize"] == 2002  # query, unlike queryAll, skips deleted rows

    for soql, name in [
        ("SELEKT Id FROM Contact", "error_malformed_query.json"),
        ("SELECT Id, Emial FROM Contact", "error_invalid_field.json"),
    ]:
        response = session.get(f"{base}/query/", params={"q": soql})
        assert_recorded(response, name)
        assert response.json() == fixture(name)["body"], "message text as Salesforce words it"
    assert_recorded(session.get(f"{base}/sobjects/Nope/describe"), "error_not_found.json")

    describe = session.get(f"{base}/sobjects/Contact/describe").json(object_pairs_hook=OrderedDict)
    fields = {f["name"]: f for f in describe["fields"]}
    assert_same_shape(fields["Id"], fixture("describe_field_id.json"))
    assert_same_shape(
        fields["Membership_Status__c"], fixture("describe_field_custom_picklist.json")
    )
    assert fields["App_User_Id__c"]["custom"] is True

    created = session.post(
        f"{base}/jobs/query",
        json={
            "operation": "queryAll",
            "query": f"SELECT {FIELDS} FROM Contact",
            "columnDelimiter": "COMMA",
            "lineEnding": "LF",
        },
    )
    assert_recorded(created, "bulk_job_created.json")
    job = created.json()["id"]
    assert session.get(f"{base}/jobs/query/{job}").json()["state"] == "InProgress"
    assert_recorded(session.get(f"{base}/jobs/query/{job}"), "bulk_job_complete.json")
    headers = fixture("bulk_results_headers.json")
    one = session.get(f"{base}/jobs/query/{job}/results", params={"maxRecords": 2000})
    for key in headers["first_page"]:
        assert key in one.headers
    assert one.headers["Sforce-NumberOfRecords"] == "2000"
    two = session.get(
        f"{base}/jobs/query/{job}/results",
        params={"maxRecords": 2000, "locator": one.headers["Sforce-Locator"]},
    )
    assert {k: two.headers[k] for k in headers["last_page"]} == {
        **headers["last_page"],
        "Sforce-NumberOfRecords": "3",
    }
    recorded = (FIXTURES / "bulk_results_last_page.csv").read_text()
    assert two.text.splitlines()[0] == recorded.splitlines()[0]
    rows = list(csv.reader(io.StringIO(two.text)))
    assert rows[2][1] == "" and ',,"' in two.text, "null is a bare empty cell"
    for row in rows[1:]:
        assert PATTERNS["bulk datetime"].match(row[2]) and row[3] in ("true", "false")

    for status, name in [
        (401, "error_invalid_session.json"),
        (403, "error_request_limit.json"),
        (500, "error_unknown_exception.json"),
    ]:
        kind = {401: "expired_session", 403: "request_limit", 500: "server_error"}[status]
        org.inject(kind)
        assert_recorded(session.get(f"{base}/query", params={"q": "SELECT Id FROM Contact"}), name)
        session.headers["Authorization"] = f"Bearer {salesforce_server.session_id()}"


def test_get_deleted_reads_the_delete_log_in_whole_minutes(salesforce_server, api) -> None:
    session, base = api
    org = salesforce_server.org
    soft, hard, kept = org.insert_many(3)
    sf = Salesforce(
        instance_url=salesforce_server.instance_url,
        session_id=salesforce_server.session_id(),
        session=salesforce_server.session(),
    )
    start = org.now() - timedelta(minutes=5)
    org.delete(soft)
    org.purge(soft)  # emptying the Recycle Bin keeps the entry of the delete
    org.purge(hard)  # a hard delete of a live record enters the log when it happens
    deleted_at = org.delete_log[soft]
    answer = sf.Contact.deleted(start, org.now())
    # The current minute is not covered yet: seconds are ignored.
    assert answer["deletedRecords"] == []
    assert answer["latestDateCovered"] == rest_datetime(to_minute(org.now()))

    org.advance(minutes=2)
    response = session.get(
        f"{base}/sobjects/Contact/deleted/",
        params={"start": start.isoformat(), "end": org.now().isoformat()},
    )
    assert_recorded(response, "deleted.json")
    body = response.json()
    assert [r["id"] for r in body["deletedRecords"]] == [soft, hard]
    assert body["deletedRecords"][0]["deletedDate"] == rest_datetime(deleted_at)
    assert kept not in str(body)

    short = session.get(
        f"{base}/sobjects/Contact/deleted/",
        params={"start": org.now().isoformat(), "end": org.now().isoformat()},
    )
    assert_recorded(short, "error_replication_date.json")
    assert short.json() == fixture("error_replication_date.json")["body"]
    with pytest.raises(SalesforceMalformedRequest, match="more than 30 days ago"):
        sf.Contact.deleted(org.now() - timedelta(days=31), org.now())

    org.purge_delete_log()
    org.advance(minutes=2)
    after = sf.Contact.deleted(start, org.now())
    assert after["deletedRecords"] == [] and after["earliestDateAvailable"] > rest_datetime(start)


@pytest.mark.parametrize("state", ["Failed", "Aborted"])
def test_bulk_jobs_that_fail_or_are_aborted(salesforce_server, api, state) -> None:
    session, base = api
    salesforce_server.org.fail_bulk_jobs(1, state=state)
    job = session.post(
        f"{base}/jobs/query", json={"operation": "queryAll", "query": "SELECT Id FROM Contact"}
    ).json()["id"]
    assert session.get(f"{base}/jobs/query/{job}").json()["state"] == "InProgress"
    assert_recorded(session.get(f"{base}/jobs/query/{job}"), f"bulk_job_{state.lower()}.json")
    results = session.get(f"{base}/jobs/query/{job}/results")
    assert results.status_code == 412 and results.json()[0]["errorCode"] == "JOB_NOT_COMPLETE"


@pytest.mark.parametrize(
    "literal",
    [
        "2020-01-01T00:00:00Z",
        "2020-01-01T00:00:00.000Z",
        "2020-01-01T01:00:00+01:00",
        "2019-12-31T19:00:00-05:00",
        "2020-01-01T00:00:00.000+0000",
    ],
)
def test_datetime_literal_forms(salesforce_server, literal) -> None:
    sf = Salesforce(
        instance_url=salesforce_server.instance_url,
        session_id=salesforce_server.session_id(),
        session=salesforce_server.session(),
    )
    from datetime import UTC, datetime

    salesforce_server.org.insert(
        LastName="Old", modstamp=datetime(2019, 12, 31, 23, 59, tzinfo=UTC)
    )
    salesforce_server.org.insert(LastName="Edge", modstamp=datetime(2020, 1, 1, tzinfo=UTC))
    salesforce_server.org.insert(LastName="New")
    names = lambda soql: [r["LastName"] for r in sf.query_all(soql)["records"]]  # noqa: E731
    assert names(
        f"SELECT LastName FROM Contact WHERE SystemModstamp >= {literal} ORDER BY SystemModstamp"
    ) == ["Edge", "New"]
    assert names(f"select LastName from Contact where SystemModstamp > {literal}") == ["New"]


def test_paging_batch_size_and_locator_paths(salesforce_server) -> None:
    org = salesforce_server.org
    org.insert_many(450)
    sf = Salesforce(
        instance_url=salesforce_server.instance_url,
        session_id=salesforce_server.session_id(),
        session=salesforce_server.session(),
    )
    opts = {"headers": {"Sforce-Query-Options": "batchSize=200"}}
    first = sf.query("SELECT Id FROM Contact", include_deleted=True, **opts)
    assert len(first["records"]) == 200 and "/query/" in first["nextRecordsUrl"]
    locator = first["nextRecordsUrl"].rsplit("/", 1)[1]
    second = sf.query_more(locator, include_deleted=True, **opts)  # .../queryAll/<locator>
    assert len(second["records"]) == 200 and not second["done"]
    assert len(list(sf.query_all_iter("SELECT Id FROM Contact", **opts))) == 450
    assert sf.api_usage["api-usage"].used == org.api_used


def test_api_usage_counts_calls_and_refuses_past_the_limit(salesforce_server) -> None:
    org = salesforce_server.org
    org.set_api_usage(98, 100)
    sf = Salesforce(
        instance_url=salesforce_server.instance_url,
        session_id=salesforce_server.session_id(),
        session=salesforce_server.session(),
    )
    sf.query("SELECT Id FROM Contact")
    assert tuple(sf.api_usage["api-usage"]) == (99, 100)
    sf.query("SELECT Id FROM Contact")
    with pytest.raises(SalesforceRefusedRequest, match="REQUEST_LIMIT_EXCEEDED"):
        sf.query("SELECT Id FROM Contact")


def test_faults(salesforce_server) -> None:
    org = salesforce_server.org
    sf = Salesforce(
        instance_url=salesforce_server.instance_url,
        session_id=salesforce_server.session_id(),
        session=salesforce_server.session(),
    )
    org.inject("server_error", times=2, after=1)
    sf.query("SELECT Id FROM Contact")
    for _ in range(2):
        with pytest.raises(SalesforceGeneralError, match="UNKNOWN_EXCEPTION"):
            sf.query("SELECT Id FROM Contact")
    sf.query("SELECT Id FROM Contact")
    org.inject("drop")
    with pytest.raises(requests.ConnectionError):
        sf.query("SELECT Id FROM Contact")
    with pytest.raises(SalesforceMalformedRequest, match="MALFORMED_QUERY"):
        sf.query("SELECT Id FROM Contact WHERE")
    org.expire_sessions()
    with pytest.raises(SalesforceExpiredSession):  # direct sessions cannot log in again
        sf.query("SELECT Id FROM Contact")


def test_login_flows(salesforce_server, jwt_keypair, tmp_path) -> None:
    org = salesforce_server.org
    creds = org.credentials
    org.insert(LastName="Only")
    key_file = tmp_path / "server.key"
    key_file.write_bytes(jwt_keypair[0])
    flows = {
        "soap": dict(
            username=creds.username,
            password=creds.password,
            security_token=creds.security_token,
            domain="test",
        ),
        "oauth_password": dict(
            username=creds.username,
            password=creds.password,
            consumer_key=creds.consumer_key,
            consumer_secret=creds.consumer_secret,
        ),
        "jwt_bearer": dict(
            username=creds.username, consumer_key=creds.consumer_key, privatekey_file=str(key_file)
        ),
        "client_credentials": dict(
            consumer_key=creds.consumer_key, consumer_secret=creds.consumer_secret, domain="acme.my"
        ),
    }
    for flow, kwargs in flows.items():
        sf = Salesforce(session=salesforce_server.session(), version="60.0", **kwargs)
        assert sf.sf_instance == "acme.my.salesforce.com"
        assert sf.query("SELECT LastName FROM Contact")["records"][0]["LastName"] == "Only"
        assert org.logins[-1] == flow
    assert ("POST", "test.salesforce.com", "/services/Soap/u/60.0") in org.requests

    # A session that expires mid-run is renewed by a login-mode client.
    org.expire_sessions()
    assert sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 1
    assert org.logins[-1] == "client_credentials"

    bad = {
        "soap": dict(flows["soap"], security_token="WRONG"),
        "oauth_password": dict(flows["oauth_password"], password="nope"),
        "jwt_bearer": dict(flows["jwt_bearer"], username="someone@else.example"),
        "client_credentials": dict(flows["client_credentials"], consumer_secret="nope"),
    }
    codes = {
        "soap": "INVALID_LOGIN",
        "oauth_password": "invalid_grant",
        "jwt_bearer": "invalid_grant",
        "client_credentials": "invalid_client",
    }
    for flow, kwargs in bad.items():
        with pytest.raises(SalesforceAuthenticationFailed) as failure:
            Salesforce(session=salesforce_server.session(), **kwargs)
        assert failure.value.code == codes[flow]


def test_late_commit_keeps_an_older_modstamp(salesforce_server) -> None:
    org = salesforce_server.org
    record = org.insert(LastName="Late", modstamp=minutes_ago(5))
    assert org.contacts[record]["SystemModstamp"] < minutes_ago(4)
