"""Where Salesforce Contacts come from: the API (simple-salesforce) or a bundled Data Loader export.

Both land contacts in raw.salesforce_contact with the same columns, so everything downstream is
the same whichever source is configured. `contact_source_from_env()` picks the API when
credentials are in the environment and the sample export otherwise.
"""

from __future__ import annotations

import dataclasses
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import TypeVar

import dagster as dg
import duckdb
import pandas as pd
import requests
from pydantic import Field

from personalization_pipeline.env_values import parse_env_value
from personalization_pipeline.errors import require_columns
from personalization_pipeline.salesforce.client import (
    RetryPolicy,
    SalesforceAuth,
    SalesforceClient,
    SalesforceConfigError,
)
from personalization_pipeline.salesforce.extract import ExtractSettings, read_export
from personalization_pipeline.salesforce.landing import (
    ContactLanding,
    land_from_api,
    land_from_export,
)
from personalization_pipeline.salesforce.mapping import SYSTEM_FIELDS
from personalization_pipeline.warehouse.csv_files import csv_header

DEFAULT_SAMPLE_CONTACTS_PATH = "data/sample/salesforce_contacts.csv"
# How far back the sensor looks for hard deletes; much more than a tick, within getDeleted's reach.
DELETES_SEEN_BY_SENSOR = timedelta(days=1)
PAGE_SIZE = 2000

Log = Callable[[str], None]
T = TypeVar("T")


def _quiet(message: str) -> None:
    """The default log: say nothing."""


def env_var(setting: str) -> str:
    """The environment variable for a source setting: SALESFORCE_<SETTING>."""
    return f"SALESFORCE_{setting.upper()}"


def contact_fields(configured: Mapping[str, str]) -> dict[str, str]:
    """Salesforce Contact field -> raw.salesforce_contact column, given column -> field for the
    configurable columns (the system fields are the same in every org).

    One field cannot feed two columns: the mapping would keep only one of them and leave the
    other column empty, so that is refused (case-insensitively, as SOQL reads field names).
    """
    fields: dict[str, str] = {}
    seen: dict[str, str] = {}
    for column, field in {**SYSTEM_FIELDS, **configured}.items():
        other = seen.setdefault(field.lower(), column)
        if other != column:
            settings = [env_var(f"{name}_field") for name in (other, column) if name in configured]
            raise SalesforceConfigError(
                f"Contact field {field} is mapped to two columns, {other} and {column}; each "
                f"column needs its own field: fix {' or '.join(settings)}"
            )
        fields[field] = column
    return fields


class ContactSource(dg.ConfigurableResource, ABC):
    """Salesforce Contacts, one page of records at a time.

    Each `<column>_field` setting names the Contact field that lands in that column;
    `extra_fields` names more fields to land in columns of their own, `*` every field
    (personalization_pipeline/salesforce/extra_fields.py).
    """

    user_id_field: str = "App_User_Id__c"
    email_field: str = "Email"
    first_name_field: str = "FirstName"
    last_name_field: str = "LastName"
    membership_status_field: str = "Membership_Status__c"
    extra_fields: list[str] = Field(
        default=[], description="More Contact fields to land as columns of their own; * = all"
    )
    # A full refresh may mark at most this share of the live contacts deleted (1 = no limit).
    max_delete_fraction: float = ExtractSettings.max_delete_fraction

    @property
    def fields(self) -> dict[str, str]:
        return contact_fields(
            {
                name.removesuffix("_field"): getattr(self, name)
                for name in type(self).model_fields
                if name.endswith("_field")
            }
        )

    @abstractmethod
    def describe(self) -> str:
        """Which source this is, for logs and metadata (never includes secrets)."""

    @abstractmethod
    def land_contacts(
        self, connection: duckdb.DuckDBPyConnection, full_refresh: bool, log: Log, warn: Log
    ) -> ContactLanding:
        """Bring raw.salesforce_contact up to date (deleted contacts kept with is_deleted).

        `warn` receives what an operator must act on.
        """

    def marker_before_landing(self) -> str | None:
        """The change marker, when it costs nothing to take before each landing (a run then
        records it, and the sensor does not start a run for what that run already landed).
        From the API it would cost a login and three calls per run, so it is not taken."""
        return None

    @abstractmethod
    def change_marker(self) -> str:
        """A cheap summary that changes whenever any Contact changes (sensors poll it).

        The number of contacts (deleted ones included, so a purge shows) and the latest
        SystemModstamp (every edit and soft delete advances it); from the API also the newest
        hard delete.
        """


class SampleContactSource(ContactSource):
    """A Salesforce Data Loader export (CSV): the demo, and whenever no credentials are set."""

    path: str = DEFAULT_SAMPLE_CONTACTS_PATH

    def describe(self) -> str:
        return f"Contact export {self.path} (no Salesforce credentials set)"

    def land_contacts(
        self, connection: duckdb.DuckDBPyConnection, full_refresh: bool, log: Log, warn: Log
    ) -> ContactLanding:
        """An export is always complete, so every run is a full refresh."""
        return land_from_export(
            connection,
            self.path,
            self.fields,
            self.extra_fields,
            self.max_delete_fraction,
            PAGE_SIZE,
            log,
        )

    def pages(self) -> Iterator[pd.DataFrame]:
        require_columns(self.path, csv_header(self.path), list(self.fields))
        return read_export(self.path, PAGE_SIZE)

    def marker_before_landing(self) -> str | None:
        return self.change_marker()

    def change_marker(self) -> str:
        count, latest = 0, ""
        for page in self.pages():
            count += len(page)
            latest = max([latest, *page[SYSTEM_FIELDS["system_modstamp"]].fillna("")])
        return change_marker(count, latest)


def change_marker(count: int, latest_modstamp: str | None) -> str:
    return f"{count} contacts, latest SystemModstamp {latest_modstamp or 'none'}"


class SalesforceApiSource(ContactSource):
    """Contacts read through the Salesforce API with simple-salesforce.

    Logs in with whichever flow the settings describe (see SalesforceAuth.flow): username +
    password + security token (domain `login`, `test` or a My Domain such as `acme.my`), OAuth
    username-password, JWT bearer (consumer key + private key file), client credentials
    (consumer key + secret on a My Domain), or an instance URL + session id. `extract()` lands
    contacts incrementally; see personalization_pipeline/salesforce/extract.py.
    """

    # Named as SalesforceAuth's fields, which auth() builds from them.
    username: str | None = None
    password: str | None = None
    security_token: str | None = None
    domain: str = SalesforceAuth.domain
    consumer_key: str | None = None
    consumer_secret: str | None = None
    private_key_file: str | None = None
    instance_url: str | None = None
    session_id: str | None = None
    api_version: str = SalesforceAuth.api_version
    # Named as ExtractSettings' fields, which extract() builds from them.
    lookback_minutes: float = ExtractSettings.lookback_minutes
    bulk_threshold: int = ExtractSettings.bulk_threshold
    api_budget_share: float = ExtractSettings.api_budget_share
    bulk_poll_seconds: float = ExtractSettings.bulk_poll_seconds
    query_batch_size: int = ExtractSettings.query_batch_size
    bulk_page_size: int = ExtractSettings.bulk_page_size
    max_attempts: int = RetryPolicy.max_attempts
    retry_base_seconds: float = RetryPolicy.base_seconds
    retry_max_seconds: float = RetryPolicy.max_seconds

    def describe(self) -> str:
        return f"Salesforce API v{self.api_version} as {self.auth().who}"

    def auth(self) -> SalesforceAuth:
        return self._settings(SalesforceAuth)

    def _settings(self, kind: type[T]) -> T:
        """A settings dataclass filled from this resource's settings of the same names."""
        return kind(**{field.name: getattr(self, field.name) for field in dataclasses.fields(kind)})

    def requests_session(self) -> requests.Session | None:
        """Test seam only: tests return a session that reaches the local Salesforce server."""
        return None

    def connect(self, log: Log = _quiet, warn: Log = _quiet) -> SalesforceClient:
        retry = RetryPolicy(self.max_attempts, self.retry_base_seconds, self.retry_max_seconds)
        return SalesforceClient(
            self.auth(), retry=retry, session=self.requests_session(), log=log, warn=warn
        )

    def land_contacts(
        self, connection: duckdb.DuckDBPyConnection, full_refresh: bool, log: Log, warn: Log
    ) -> ContactLanding:
        """Land new, changed and deleted contacts (incremental; salesforce/extract.py)."""
        settings = self._settings(ExtractSettings)
        fields = self.fields  # a mapping that cannot work fails before logging in
        client = self.connect(log, warn)
        return land_from_api(
            client, connection, fields, self.extra_fields, settings, full_refresh, log, warn
        )

    def change_marker(self) -> str:
        """Also the newest hard delete of the last day: the run a purge starts may come before
        getDeleted reports it (it ignores seconds), and this part changes once it does."""
        client = self.connect()
        count = client.query_page("SELECT COUNT() FROM Contact", self.query_batch_size)
        latest = client.query_page(
            "SELECT SystemModstamp FROM Contact ORDER BY SystemModstamp DESC LIMIT 1",
            self.query_batch_size,
        )["records"]
        now = client.clock()
        deleted = client.deleted_contacts(now - DELETES_SEEN_BY_SENSOR, now)["deletedRecords"]
        latest_delete = max((record["deletedDate"] for record in deleted), default="none")
        marker = change_marker(count["totalSize"], latest[0]["SystemModstamp"] if latest else None)
        return f"{marker}, latest delete {latest_delete}"


# The login settings reach the run only through EnvVar, which keeps credentials out of the run
# config that the UI shows; every other setting is a plain value there.
AUTH_SETTINGS = frozenset(field.name for field in dataclasses.fields(SalesforceAuth))
API_SELECTORS = ("SALESFORCE_USERNAME", "SALESFORCE_CONSUMER_KEY", "SALESFORCE_INSTANCE_URL")


def contact_source_from_env() -> ContactSource:
    """The API if SALESFORCE_USERNAME, SALESFORCE_CONSUMER_KEY or SALESFORCE_INSTANCE_URL is set,
    else the sample export (SAMPLE_CONTACTS_PATH). Each setting comes from SALESFORCE_<SETTING>.
    """
    api = any(os.environ.get(variable) for variable in API_SELECTORS)
    source = SalesforceApiSource if api else SampleContactSource
    settings: dict[str, object] = {}
    for name, field in source.model_fields.items():
        variable = env_var(name)
        if name == "path" or not os.environ.get(variable):
            continue
        if name in AUTH_SETTINGS:
            settings[name] = dg.EnvVar(variable)
        else:
            settings[name] = parse_env_value(variable, os.environ[variable], field.annotation)
    if not api:
        settings["path"] = os.environ.get("SAMPLE_CONTACTS_PATH", DEFAULT_SAMPLE_CONTACTS_PATH)
    return source(**settings)
