"""Every SALESFORCE_* variable that .env.example documents reaches the setting it names."""

from __future__ import annotations

import re

import dagster as dg
import pytest

from personalization_pipeline.env_values import EnvValueError, parse_env_value
from personalization_pipeline.resources.salesforce import (
    API_SELECTORS,
    AUTH_SETTINGS,
    SalesforceApiSource,
    SampleContactSource,
    contact_source_from_env,
)
from personalization_pipeline.salesforce.client import SalesforceAuth
from personalization_pipeline.salesforce.extract import ExtractSettings
from tests.conftest import REPO_ROOT

DOCUMENTED = sorted(
    set(re.findall(r"^#? ?(SALESFORCE_[A-Z_]+)=", (REPO_ROOT / ".env.example").read_text(), re.M))
)


@pytest.fixture(autouse=True)
def without_salesforce_settings(monkeypatch):
    """Whatever the shell exports, each test starts from the documented defaults."""
    for variable in [*DOCUMENTED, "SAMPLE_CONTACTS_PATH"]:
        monkeypatch.delenv(variable, raising=False)


@pytest.mark.parametrize("api", [True, False], ids=["api", "export"])
def test_documented_variables_reach_their_settings(monkeypatch, api):
    assert len(DOCUMENTED) == 26
    for variable in DOCUMENTED:
        if api or variable not in API_SELECTORS:
            monkeypatch.setenv(variable, "7")
    source = contact_source_from_env()
    assert type(source) is (SalesforceApiSource if api else SampleContactSource)
    for variable in DOCUMENTED:
        setting = variable.removeprefix("SALESFORCE_").lower()
        if setting not in type(source).model_fields:
            assert not api, f"{variable} reaches no setting"
            continue
        value = getattr(source, setting)
        if setting in AUTH_SETTINGS:
            assert isinstance(value, dg.EnvVar) and value == variable
        else:
            kind = type(type(source).model_fields[setting].default)
            assert (type(value), value) == (kind, kind("7")), variable


def test_settings_are_parsed_by_type_and_a_bad_one_is_named_without_its_value(monkeypatch):
    monkeypatch.setenv("SALESFORCE_USERNAME", "integration@example.com")
    monkeypatch.setenv("SALESFORCE_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("SALESFORCE_EXTRA_FIELDS", " Churn_Score__c, Lifetime_Value__c ,")
    source = contact_source_from_env()
    assert type(source.max_attempts) is int and source.max_attempts == 3
    assert source.extra_fields == ["Churn_Score__c", "Lifetime_Value__c"]

    # A password pasted into the wrong variable must not reach a log through the error.
    monkeypatch.setenv("SALESFORCE_LOOKBACK_MINUTES", "hunter2")
    with pytest.raises(EnvValueError) as raised:
        contact_source_from_env()
    message = str(raised.value)
    assert message.startswith("SALESFORCE_LOOKBACK_MINUTES must be a number such as 0.5")
    assert "hunter2" not in message
    assert raised.value.__cause__ is None and raised.value.__context__ is None


@pytest.mark.parametrize(
    "text, annotation, expected",
    [
        ("3", int, 3),
        ("7", int | None, 7),
        ("0.25", float | None, 0.25),
        ("false", bool, False),
        ("No", bool, False),
        ("1", bool, True),
        (" yes ", bool, True),
        ("", list[str], []),
        ("a, b,,c", list[str], ["a", "b", "c"]),
        ("1,2", list[int], [1, 2]),
    ],
)
def test_parse_env_value(text, annotation, expected):
    value = parse_env_value("X", text, annotation)
    assert (type(value), value) == (type(expected), expected)


@pytest.mark.parametrize("text, annotation", [("maybe", bool), ("3.5", int), ("1,x", list[int])])
def test_parse_env_value_refuses_what_is_not_of_the_type(text, annotation):
    with pytest.raises(EnvValueError, match=r"^SETTING must be .*\(not shown"):
        parse_env_value("SETTING", text, annotation)


def test_the_resource_builds_the_core_settings_from_its_own():
    source = SalesforceApiSource(username="u", password="p", domain="test", lookback_minutes=3)
    assert source.auth().flow == "password" and source.auth().domain == "test"
    assert source._settings(ExtractSettings) == ExtractSettings(lookback_minutes=3)


@pytest.mark.parametrize("api", [False, True], ids=["export", "api"])
def test_max_delete_fraction_is_the_same_for_both_sources_and_comes_from_the_environment(
    monkeypatch, api
):
    """The export once allowed any share of deletions, so a parse that lost rows deleted them."""
    if api:
        monkeypatch.setenv("SALESFORCE_USERNAME", "integration@example.com")
    assert contact_source_from_env().max_delete_fraction == 0.2
    monkeypatch.setenv("SALESFORCE_MAX_DELETE_FRACTION", "0.5")
    assert contact_source_from_env().max_delete_fraction == 0.5


@pytest.mark.parametrize(
    "settings, flow",
    [
        ({}, "incomplete"),
        ({"password": "hunter2-secret", "security_token": "TOKEN-secret"}, "incomplete"),
        ({"username": "integration@example.com", "consumer_secret": "cs-secret"}, "incomplete"),
        ({"session_id": "00D!session-secret"}, "incomplete"),
        (
            {
                "instance_url": "https://user:pw-secret@acme.my.salesforce.com",
                "session_id": "s-secret",
            },
            "session",
        ),
        (
            {"consumer_key": "ck", "consumer_secret": "cs-secret", "domain": "acme.my"},
            "client_credentials",
        ),
    ],
)
def test_auth_repr_never_raises_and_never_shows_a_secret(settings, flow):
    text = repr(SalesforceAuth(**settings))
    assert text.startswith(f"SalesforceAuth(flow={flow!r}, who=")
    assert "secret" not in text
