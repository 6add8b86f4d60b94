"""Sources: land Salesforce Contacts and the income-enrichment drop in the warehouse as is."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pydantic import Field
from simple_salesforce.exceptions import SalesforceAuthenticationFailed

from personalization_pipeline.errors import MissingColumnsError
from personalization_pipeline.metadata import table_metadata
from personalization_pipeline.resources.enrichment import EnrichmentFileResource
from personalization_pipeline.resources.salesforce import ContactSource, SalesforceApiSource
from personalization_pipeline.resources.warehouse import WarehouseResource
from personalization_pipeline.salesforce.client import SalesforceConfigError, SalesforceQueryError
from personalization_pipeline.salesforce.mapping import FieldMappingError
from personalization_pipeline.warehouse.contacts import replace_contacts
from personalization_pipeline.warehouse.income import replace_income

# Transient source failures (Salesforce calls retry on their own first) get a second chance.
SOURCE_RETRY = dg.RetryPolicy(max_retries=2, delay=60, backoff=dg.Backoff.EXPONENTIAL)

# Errors that fail the same way on every attempt: bad files, mappings, queries, credentials.
PERMANENT_ERRORS = (
    MissingColumnsError,
    FileNotFoundError,
    ValueError,
    FieldMappingError,
    SalesforceQueryError,
    SalesforceConfigError,
    SalesforceAuthenticationFailed,
)


@contextmanager
def fail_without_retry_on_permanent_errors() -> Iterator[None]:
    try:
        yield
    except PERMANENT_ERRORS as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error


class SalesforceContactsConfig(dg.Config):
    full_refresh: bool = Field(
        default=False,
        description="Reload every contact and mark those Salesforce no longer returns as deleted.",
    )


@dg.asset(
    group_name="sources",
    kinds={"salesforce", "duckdb"},
    pool="duckdb",
    retry_policy=SOURCE_RETRY,
)
def salesforce_contacts(
    context: dg.AssetExecutionContext,
    config: SalesforceContactsConfig,
    salesforce: ContactSource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """Salesforce Contacts, deleted ones included, landed in raw.salesforce_contact."""
    context.log.info(f"Reading contacts from {salesforce.describe()}")
    with fail_without_retry_on_permanent_errors():
        if isinstance(salesforce, SalesforceApiSource):
            return _extract_from_api(context, config, salesforce, warehouse)
        with warehouse.connect() as connection:
            load = replace_contacts(connection, salesforce.contact_pages(), salesforce.fields)
            metadata = table_metadata(connection, "raw.salesforce_contact")
    context.log.info(
        f"Landed {load.rows} contacts ({load.deleted} deleted, "
        f"{load.without_user_id} without an app user id)"
    )
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "source": salesforce.describe(),
            "deleted_contacts": load.deleted,
            "contacts_without_user_id": load.without_user_id,
        }
    )


def _extract_from_api(
    context: dg.AssetExecutionContext,
    config: SalesforceContactsConfig,
    salesforce: SalesforceApiSource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    with warehouse.connect() as connection:
        result, usage = salesforce.extract(connection, config.full_refresh, context.log.info)
        metadata = table_metadata(connection, "raw.salesforce_contact")
        deleted, without_user_id = connection.execute(
            "SELECT count(*) FILTER (is_deleted), "
            "count(*) FILTER (NOT is_deleted AND coalesce(trim(user_id), '') = '') "
            "FROM raw.salesforce_contact"
        ).fetchone()
    if result.stopped_early:
        context.log.warning(f"Stopped early: {result.stopped_early}")
    context.log.info(
        f"{result.mode.upper()}: fetched {result.rows_fetched}, inserted {result.inserted}, "
        f"updated {result.updated}, marked deleted {result.marked_deleted}; "
        f"cursor {result.cursor_before} -> {result.cursor_after}; API calls {usage.calls}, "
        f"usage {usage.reported()}"
    )
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "source": salesforce.describe(),
            "api": "Bulk API 2.0" if result.mode == "bulk" else "REST",
            "full_refresh": result.full_refresh,
            "rows_fetched": result.rows_fetched,
            "rows_inserted": result.inserted,
            "rows_updated": result.updated,
            "rows_marked_deleted": result.marked_deleted,
            "cursor_before": str(result.cursor_before or "none"),
            "cursor_after": str(result.cursor_after or "none"),
            "api_calls_used": usage.calls,
            "api_usage_reported": usage.reported(),
            "stopped_early": result.stopped_early or "no",
            "deleted_contacts": deleted,
            "contacts_without_user_id": without_user_id,
        }
    )


@dg.asset(
    group_name="sources",
    kinds={"duckdb"},
    pool="duckdb",
    retry_policy=SOURCE_RETRY,
)
def income_enrichment(
    context: dg.AssetExecutionContext,
    income_file: EnrichmentFileResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """Income brackets from the enrichment vendor's latest drop, landed in raw.income_enrichment."""
    with fail_without_retry_on_permanent_errors(), warehouse.connect() as connection:
        load = replace_income(connection, income_file.path)
        metadata = table_metadata(connection, "raw.income_enrichment")
    context.log.info(f"Landed {load.rows} income rows from {income_file.path}")
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "source_file": income_file.path,
            "rows_without_email": load.without_email,
        }
    )
