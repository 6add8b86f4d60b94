"""Where Salesforce Contacts come from: the API (simple-salesforce) or a bundled Data Loader export.

Both implementations yield pages of records keyed by Salesforce field API names, so everything
downstream is the same whichever source is configured. `contact_source_from_env()` picks the
API when credentials are in the environment and the sample export otherwise.
"""

from __future__ import annotations

import csv
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from personalization_pipeline.errors import require_columns

DEFAULT_SAMPLE_CONTACTS_PATH = "data/sample/salesforce_contacts.csv"
DEFAULT_USER_ID_FIELD = "App_User_Id__c"
PAGE_SIZE = 2000

Record = dict[str, object]


def contact_fields(user_id_field: str) -> dict[str, str]:
    """Salesforce Contact field -> raw.salesforce_contact column."""
    return {
        "Id": "id",
        user_id_field: "user_id",
        "Email": "email",
        "FirstName": "first_name",
        "LastName": "last_name",
        "Membership_Status__c": "membership_status",
        "SystemModstamp": "system_modstamp",
        "IsDeleted": "is_deleted",
    }


class ContactSource(dg.ConfigurableResource, ABC):
    """Salesforce Contacts, one page of records at a time."""

    user_id_field: str = DEFAULT_USER_ID_FIELD

    @property
    def fields(self) -> dict[str, str]:
        return contact_fields(self.user_id_field)

    @abstractmethod
    def describe(self) -> str:
        """Which source this is, for logs and metadata (never includes secrets)."""

    @abstractmethod
    def contact_pages(self) -> Iterator[list[Record]]:
        """Every Contact, deleted ones included (IsDeleted = true), in pages."""

    @abstractmethod
    def change_marker(self) -> str:
        """A cheap summary that changes whenever any Contact changes (sensors poll it).

        The number of contacts (deleted ones included, so a purge shows) and the latest
        SystemModstamp (every edit and soft delete advances it).
        """


class SampleContactSource(ContactSource):
    """A Salesforce Data Loader export (CSV): the demo, and whenever no credentials are set."""

    path: str = DEFAULT_SAMPLE_CONTACTS_PATH

    def describe(self) -> str:
        return f"Contact export {self.path} (no Salesforce credentials set)"

    def contact_pages(self) -> Iterator[list[Record]]:
        with Path(self.path).open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            require_columns(self.path, reader.fieldnames or [], list(self.fields))
            page: list[Record] = []
            for row in reader:
                page.append({field: _export_value(row[field]) for field in self.fields})
                if len(page) == PAGE_SIZE:
                    yield page
                    page = []
            if page:
                yield page

    def change_marker(self) -> str:
        count, latest = 0, ""
        for page in self.contact_pages():
            count += len(page)
            latest = max([latest, *(str(r["SystemModstamp"] or "") for r in page)])
        return change_marker(count, latest)


def change_marker(count: int, latest_modstamp: str | None) -> str:
    return f"{count} contacts, latest SystemModstamp {latest_modstamp or 'none'}"


def _export_value(text: str) -> object:
    """Data Loader writes nulls as empty cells and booleans as true/false."""
    if text == "":
        return None
    if text in ("true", "false"):
        return text == "true"
    return text


class SalesforceApiSource(ContactSource):
    """Contacts read through the Salesforce REST API with simple-salesforce.

    Authenticates with username + password + security token (domain `login`, `test` or a My
    Domain such as `acme.my`), or with an instance URL + session id.
    """

    username: str | None = None
    password: str | None = None
    security_token: str | None = None
    domain: str = "login"
    instance_url: str | None = None
    session_id: str | None = None
    api_version: str = "59.0"

    def describe(self) -> str:
        who = self.username or self.instance_url
        return f"Salesforce API v{self.api_version} as {who}"

    def client(self):
        from simple_salesforce import Salesforce

        if self.session_id and self.instance_url:
            return Salesforce(
                instance_url=self.instance_url,
                session_id=self.session_id,
                version=self.api_version,
            )
        if self.username and self.password:
            return Salesforce(
                username=self.username,
                password=self.password,
                security_token=self.security_token or "",
                domain=self.domain,
                version=self.api_version,
            )
        raise ValueError(
            "Salesforce credentials are incomplete: set SALESFORCE_USERNAME, SALESFORCE_PASSWORD "
            "and SALESFORCE_SECURITY_TOKEN, or SALESFORCE_INSTANCE_URL and SALESFORCE_SESSION_ID"
        )

    def contact_pages(self) -> Iterator[list[Record]]:
        soql = f"SELECT {', '.join(self.fields)} FROM Contact ORDER BY SystemModstamp"
        page: list[Record] = []
        for record in self.client().query_all_iter(soql, include_deleted=True):
            page.append({field: record[field] for field in self.fields})
            if len(page) == PAGE_SIZE:
                yield page
                page = []
        if page:
            yield page

    def change_marker(self) -> str:
        client = self.client()
        count = client.query("SELECT COUNT() FROM Contact", include_deleted=True)["totalSize"]
        latest = client.query(
            "SELECT SystemModstamp FROM Contact ORDER BY SystemModstamp DESC LIMIT 1",
            include_deleted=True,
        )["records"]
        return change_marker(count, latest[0]["SystemModstamp"] if latest else None)


SALESFORCE_ENV = {
    "username": "SALESFORCE_USERNAME",
    "password": "SALESFORCE_PASSWORD",
    "security_token": "SALESFORCE_SECURITY_TOKEN",
    "domain": "SALESFORCE_DOMAIN",
    "instance_url": "SALESFORCE_INSTANCE_URL",
    "session_id": "SALESFORCE_SESSION_ID",
    "api_version": "SALESFORCE_API_VERSION",
}


def contact_source_from_env() -> ContactSource:
    """The API if SALESFORCE_USERNAME or SALESFORCE_INSTANCE_URL is set, else the sample export."""
    user_id_field = os.environ.get("SALESFORCE_USER_ID_FIELD", DEFAULT_USER_ID_FIELD)
    if os.environ.get("SALESFORCE_USERNAME") or os.environ.get("SALESFORCE_INSTANCE_URL"):
        # EnvVar keeps secrets out of the run config that the UI shows.
        settings = {
            name: dg.EnvVar(variable)
            for name, variable in SALESFORCE_ENV.items()
            if os.environ.get(variable)
        }
        return SalesforceApiSource(user_id_field=user_id_field, **settings)
    return SampleContactSource(
        user_id_field=user_id_field,
        path=os.environ.get("SAMPLE_CONTACTS_PATH", DEFAULT_SAMPLE_CONTACTS_PATH),
    )
