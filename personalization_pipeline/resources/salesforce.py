"""Where Salesforce Contacts come from: the API (simple-salesforce) or a bundled Data Loader export.

Both land contacts in raw.salesforce_contact with the same columns, so everything downstream is
the same whichever source is configured. `contact_source_from_env()` picks the API when
credentials are in the environment and the sample export otherwise.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from datetime import timedelta

import dagster as dg
import duckdb
import pandas as pd
import requests

from personalization_pipeline.errors import require_columns
from personalization_pipeline.salesforce.client import (
    ApiUsage,
    RetryPolicy,
    SalesforceAuth,
    SalesforceClient,
    SalesforceConfigError,
)
from personalization_pipeline.salesforce.extract import (
    ExtractResult,
    ExtractSettings,
    extract_contacts,
    land_export,
    read_export,
)
from personalization_pipeline.salesforce.mapping import SYSTEM_FIELDS

DEFAULT_SAMPLE_CONTACTS_PATH = "data/sample/salesforce_contacts.csv"
DEFAULT_USER_ID_FIELD = "App_User_Id__c"
PAGE_SIZE = 2000

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    """The default log: say nothing."""


def contact_fields(
    user_id_field: str,
    email_field: str = "Email",
    first_name_field: str = "FirstName",
    last_name_field: str = "LastName",
    membership_status_field: str = "Membership_Status__c",
) -> dict[str, str]:
    """Salesforce Contact field -> raw.salesforce_contact column.

    One field cannot feed two columns: the mapping would keep only one of them and leave the
    other column empty, so that is refused (case-insensitively, as SOQL reads field names).
    """
    columns = {
        "id": "Id",
        "user_id": user_id_field,
        "email": email_field,
        "first_name": first_name_field,
        "last_name": last_name_field,
        "membership_status": membership_status_field,
        "system_modstamp": "SystemModstamp",
        "is_deleted": "IsDeleted",
    }
    fields: dict[str, str] = {}
    seen: dict[str, str] = {}
    for column, field in columns.items():
        other = seen.setdefault(field.lower(), column)
        if other != column:
            settings = [
                f"SALESFORCE_{name.upper()}_FIELD"
                for name in (other, column)
                if name not in SYSTEM_FIELDS
            ]
            raise SalesforceConfigError(
                f"Contact field {field} is mapped to two columns, {other} and {column}; each "
                f"column needs its own field: fix {' or '.join(settings)}"
            )
        fields[field] = column
    return fields


class ContactSource(dg.ConfigurableResource, ABC):
    """Salesforce Contacts, one page of records at a time."""

    user_id_field: str = DEFAULT_USER_ID_FIELD
    email_field: str = "Email"
    first_name_field: str = "FirstName"
    last_name_field: str = "LastName"
    membership_status_field: str = "Membership_Status__c"
    # A full refresh may mark at most this share of the live contacts deleted (1 = no limit).
    max_delete_fraction: float = 0.2

    @property
    def fields(self) -> dict[str, str]:
        return contact_fields(
            self.user_id_field,
            self.email_field,
            self.first_name_field,
            self.last_name_field,
            self.membership_status_field,
        )

    @abstractmethod
    def describe(self) -> str:
        """Which source this is, for logs and metadata (never includes secrets)."""

    @abstractmethod
    def land_contacts(
        self, connection: duckdb.DuckDBPyConnection, full_refresh: bool, log: Log
    ) -> dict[str, object]:
        """Bring raw.salesforce_contact up to date (deleted contacts kept with is_deleted).

        Returns what was done, for Dagster metadata.
        """

    @abstractmethod
    def change_marker(self) -> str:
        """A cheap summary that changes whenever any Contact changes (sensors poll it).

        The number of contacts (deleted ones included, so a purge shows) and the latest
        SystemModstamp (every edit and soft delete advances it).
        """


class SampleContactSource(ContactSource):
    """A Salesforce Data Loader export (CSV): the demo, and whenever no credentials are set."""

    path: str = DEFAULT_SAMPLE_CONTACTS_PATH
    # The export file is what the user chose to load, and the profile shrink guard
    # (PROFILE_MAX_SHRINK) still protects Redis from a collapsed one.
    max_delete_fraction: float = 1.0

    def describe(self) -> str:
        return f"Contact export {self.path} (no Salesforce credentials set)"

    def land_contacts(
        self, connection: duckdb.DuckDBPyConnection, full_refresh: bool, log: Log
    ) -> dict[str, object]:
        """An export is always complete, so every run is a full refresh."""
        result = land_export(connection, self.pages(), self.fields, self.max_delete_fraction)
        log(f"{self.path}: {result.summary()}")
        return result.metadata()

    def pages(self) -> Iterator[pd.DataFrame]:
        header = pd.read_csv(self.path, nrows=0, encoding="utf-8-sig").columns
        require_columns(self.path, header, list(self.fields))
        return read_export(self.path, PAGE_SIZE)

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

    username: str | None = None
    password: str | None = None
    security_token: str | None = None
    domain: str = "login"
    consumer_key: str | None = None
    consumer_secret: str | None = None
    private_key_file: str | None = None
    instance_url: str | None = None
    session_id: str | None = None
    api_version: str = "59.0"
    lookback_minutes: float = 10.0
    bulk_threshold: int = 50_000
    api_budget_share: float = 0.8
    max_attempts: int = 5
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    bulk_poll_seconds: float = 5.0
    query_batch_size: int = 2000
    bulk_page_size: int = 50_000

    def describe(self) -> str:
        return f"Salesforce API v{self.api_version} as {self.auth().who}"

    def auth(self) -> SalesforceAuth:
        return SalesforceAuth(
            username=self.username,
            password=self.password,
            security_token=self.security_token,
            domain=self.domain,
            consumer_key=self.consumer_key,
            consumer_secret=self.consumer_secret,
            private_key_file=self.private_key_file,
            instance_url=self.instance_url,
            session_id=self.session_id,
            api_version=self.api_version,
        )

    def requests_session(self) -> requests.Session | None:
        """Test seam only: tests return a session that reaches the local Salesforce server."""
        return None

    def connect(self, log: Log = _quiet) -> SalesforceClient:
        retry = RetryPolicy(self.max_attempts, self.retry_base_seconds, self.retry_max_seconds)
        return SalesforceClient(self.auth(), retry=retry, session=self.requests_session(), log=log)

    def extract(
        self, connection: duckdb.DuckDBPyConnection, full_refresh: bool = False, log: Log = _quiet
    ) -> tuple[ExtractResult, ApiUsage]:
        """Land new, changed and deleted contacts in raw.salesforce_contact (incremental)."""
        settings = ExtractSettings(
            lookback=timedelta(minutes=self.lookback_minutes),
            bulk_threshold=self.bulk_threshold,
            api_budget_share=self.api_budget_share,
            query_batch_size=self.query_batch_size,
            bulk_page_size=self.bulk_page_size,
            bulk_poll_seconds=self.bulk_poll_seconds,
            max_delete_fraction=self.max_delete_fraction,
        )
        fields = self.fields  # a mapping that cannot work fails before logging in
        client = self.connect(log)
        result = extract_contacts(client, connection, fields, settings, full_refresh, log)
        return result, client.usage

    def land_contacts(
        self, connection: duckdb.DuckDBPyConnection, full_refresh: bool, log: Log
    ) -> dict[str, object]:
        result, usage = self.extract(connection, full_refresh, log)
        log(
            f"{result.mode.upper()}: {result.summary()}; API calls {usage.calls}, "
            f"usage {usage.reported()}"
        )
        return {
            "api": "Bulk API 2.0" if result.mode == "bulk" else "REST",
            **result.metadata(),
            "api_calls_used": usage.calls,
            "api_usage_reported": usage.reported(),
            "stopped_early": result.stopped_early or "no",
        }

    def change_marker(self) -> str:
        client = self.connect()
        count = client.query_page("SELECT COUNT() FROM Contact", self.query_batch_size)
        latest = client.query_page(
            "SELECT SystemModstamp FROM Contact ORDER BY SystemModstamp DESC LIMIT 1",
            self.query_batch_size,
        )["records"]
        return change_marker(count["totalSize"], latest[0]["SystemModstamp"] if latest else None)


SALESFORCE_ENV = {
    "username": "SALESFORCE_USERNAME",
    "password": "SALESFORCE_PASSWORD",
    "security_token": "SALESFORCE_SECURITY_TOKEN",
    "domain": "SALESFORCE_DOMAIN",
    "consumer_key": "SALESFORCE_CONSUMER_KEY",
    "consumer_secret": "SALESFORCE_CONSUMER_SECRET",
    "private_key_file": "SALESFORCE_PRIVATE_KEY_FILE",
    "instance_url": "SALESFORCE_INSTANCE_URL",
    "session_id": "SALESFORCE_SESSION_ID",
    "api_version": "SALESFORCE_API_VERSION",
}
# Non-secret tuning, read as plain values (they show in the run config).
SALESFORCE_TUNING_ENV = {
    "lookback_minutes": ("SALESFORCE_LOOKBACK_MINUTES", float),
    "bulk_threshold": ("SALESFORCE_BULK_THRESHOLD", int),
    "api_budget_share": ("SALESFORCE_API_BUDGET_SHARE", float),
    "max_attempts": ("SALESFORCE_MAX_ATTEMPTS", int),
    "retry_base_seconds": ("SALESFORCE_RETRY_BASE_SECONDS", float),
    "retry_max_seconds": ("SALESFORCE_RETRY_MAX_SECONDS", float),
    "bulk_poll_seconds": ("SALESFORCE_BULK_POLL_SECONDS", float),
    "query_batch_size": ("SALESFORCE_QUERY_BATCH_SIZE", int),
    "bulk_page_size": ("SALESFORCE_BULK_PAGE_SIZE", int),
    "max_delete_fraction": ("SALESFORCE_MAX_DELETE_FRACTION", float),
}
FIELD_ENV = {
    "user_id_field": "SALESFORCE_USER_ID_FIELD",
    "email_field": "SALESFORCE_EMAIL_FIELD",
    "first_name_field": "SALESFORCE_FIRST_NAME_FIELD",
    "last_name_field": "SALESFORCE_LAST_NAME_FIELD",
    "membership_status_field": "SALESFORCE_MEMBERSHIP_STATUS_FIELD",
}


def contact_source_from_env() -> ContactSource:
    """The API if SALESFORCE_USERNAME, SALESFORCE_CONSUMER_KEY or SALESFORCE_INSTANCE_URL is set,
    else the sample export."""
    field_names = {name: os.environ[var] for name, var in FIELD_ENV.items() if os.environ.get(var)}
    api_vars = ("SALESFORCE_USERNAME", "SALESFORCE_CONSUMER_KEY", "SALESFORCE_INSTANCE_URL")
    if any(os.environ.get(variable) for variable in api_vars):
        # EnvVar keeps secrets out of the run config that the UI shows.
        settings = {
            name: dg.EnvVar(variable)
            for name, variable in SALESFORCE_ENV.items()
            if os.environ.get(variable)
        }
        tuning = {
            name: kind(os.environ[variable])
            for name, (variable, kind) in SALESFORCE_TUNING_ENV.items()
            if os.environ.get(variable)
        }
        return SalesforceApiSource(**field_names, **settings, **tuning)
    guard = os.environ.get("SALESFORCE_MAX_DELETE_FRACTION")
    return SampleContactSource(
        **field_names,
        **({"max_delete_fraction": float(guard)} if guard else {}),
        path=os.environ.get("SAMPLE_CONTACTS_PATH", DEFAULT_SAMPLE_CONTACTS_PATH),
    )
