"""One landing of Salesforce Contacts in raw.salesforce_contact, from the API or from a Data
Loader export, and what it did as one typed result (the asset's metadata comes from it)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import duckdb

from personalization_pipeline.errors import require_columns
from personalization_pipeline.salesforce.client import ApiUsage, SalesforceClient
from personalization_pipeline.salesforce.contact_columns import ContactColumns
from personalization_pipeline.salesforce.extra_fields import extra_fields_from_export
from personalization_pipeline.salesforce.extract import (
    ExtractResult,
    ExtractSettings,
    ensure_state,
    extract_contacts,
    land_export,
    read_export,
)
from personalization_pipeline.warehouse.added_columns import column_types
from personalization_pipeline.warehouse.csv_files import csv_header
from personalization_pipeline.warehouse.tables import SALESFORCE_CONTACT

Log = Callable[[str], None]
API_NAMES = {"rest": "REST", "bulk": "Bulk API 2.0"}


@dataclass(frozen=True)
class ContactLanding:
    result: ExtractResult
    api: str
    """REST, Bulk API 2.0 or export."""
    usage: ApiUsage | None = None
    """The API calls this landing made (None for an export)."""

    def summary(self) -> str:
        if self.usage is None:
            return self.result.summary()
        return (
            f"{self.result.mode.upper()}: {self.result.summary()}; API calls {self.usage.calls}, "
            f"usage {self.usage.reported()}"
        )

    def metadata(self) -> dict[str, object]:
        """For Dagster: each key keeps one type across runs."""
        if self.usage is None:
            return self.result.metadata()
        return {
            "api": self.api,
            **self.result.metadata(),
            "api_calls_used": self.usage.calls,
            "api_usage_reported": self.usage.reported(),
            "stopped_early": self.result.stopped_early or "no",
        }


def land_from_api(
    client: SalesforceClient,
    connection: duckdb.DuckDBPyConnection,
    fields: Mapping[str, str],
    extra_fields: Sequence[str],
    settings: ExtractSettings,
    full_refresh: bool,
    log: Log,
    warn: Log,
) -> ContactLanding:
    """Bring raw.salesforce_contact up to date through the API (incrementally; extract.py)."""
    result = extract_contacts(
        client, connection, fields, settings, full_refresh, log, warn, extra_fields=extra_fields
    )
    landing = ContactLanding(result, API_NAMES[result.mode], client.usage)
    log(landing.summary())
    return landing


def land_from_export(
    connection: duckdb.DuckDBPyConnection,
    path: str,
    fields: Mapping[str, str],
    extra_fields: Sequence[str],
    max_delete_fraction: float,
    page_size: int,
    log: Log,
) -> ContactLanding:
    """Land a complete Data Loader export: a full refresh every time. Its extra fields are
    columns of its header (no describe; see extra_fields.py for their types)."""
    header = csv_header(path)
    require_columns(path, header, list(fields))
    ensure_state(connection)
    existing = column_types(connection, SALESFORCE_CONTACT)
    extras = extra_fields_from_export(extra_fields, header, fields, existing, path)
    columns = ContactColumns(fields, extras)
    result = land_export(connection, read_export(path, page_size), columns, max_delete_fraction)
    landing = ContactLanding(result, "export")
    log(f"{path}: {landing.summary()}")
    return landing
