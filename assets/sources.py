"""Sources: land Salesforce Contacts, the income-enrichment drop, the product catalog and the
historical orders in the warehouse as is."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import Field
from simple_salesforce.exceptions import SalesforceAuthenticationFailed

from assets import OWNERS, layer
from personalization_pipeline.errors import PermanentError
from personalization_pipeline.metadata import column_schema, table_metadata
from personalization_pipeline.resources.catalog import CatalogFilesResource
from personalization_pipeline.resources.enrichment import EnrichmentFileResource
from personalization_pipeline.resources.rules import ProfileRulesResource
from personalization_pipeline.resources.salesforce import ContactSource
from personalization_pipeline.resources.warehouse import WarehouseResource
from personalization_pipeline.warehouse.catalog import DropLoad, replace_orders, replace_products
from personalization_pipeline.warehouse.contacts import contact_counts
from personalization_pipeline.warehouse.income import file_sha256, replace_income
from personalization_pipeline.warehouse.tables import (
    INCOME_ENRICHMENT,
    ORDERS,
    PRODUCTS,
    SALESFORCE_CONTACT,
)

# What each source's sensor compares with the source: recorded by every materialization, so a
# run the sensor did not start (the demo, the Launchpad) counts as having seen the source.
CHANGE_MARKER = "change_marker"
CONTENT_SHA256 = "content_sha256"

# Transient source failures (Salesforce calls retry on their own first) get a second chance.
SOURCE_RETRY = dg.RetryPolicy(max_retries=2, delay=60, backoff=dg.Backoff.EXPONENTIAL)

# Errors that fail the same way on every attempt: our PermanentError (bad files, mappings,
# queries, credentials), and the two from libraries that cannot carry our marker.
PERMANENT_ERRORS = (PermanentError, FileNotFoundError, SalesforceAuthenticationFailed)


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
    owners=OWNERS,
    tags=layer("source", personal_data=True),
    pool="duckdb",
    metadata=column_schema(SALESFORCE_CONTACT),
    retry_policy=SOURCE_RETRY,
)
def salesforce_contacts(
    context: dg.AssetExecutionContext,
    config: SalesforceContactsConfig,
    salesforce: ContactSource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """Salesforce Contacts, deleted ones included, landed in raw.salesforce_contact."""
    with fail_without_retry_on_permanent_errors():
        source = salesforce.describe()
        context.log.info(f"Reading contacts from {source}")
        # Taken before landing: a change made meanwhile shows as a different marker, so the
        # sensor runs again rather than missing it. The sensor compares with this.
        marker = salesforce.marker_before_landing()
        with warehouse.connect() as connection:
            landed = salesforce.land_contacts(
                connection, config.full_refresh, context.log.info, context.log.warning
            )
            metadata = table_metadata(connection, "raw.salesforce_contact")
            counts = contact_counts(connection)
    if landed.result.stopped_early:
        context.log.warning(f"Stopped early, progress kept: {landed.result.stopped_early}")
    context.log.info(
        f"raw.salesforce_contact holds {counts.rows} contacts ({counts.deleted} deleted, "
        f"{counts.without_user_id} live ones without an app user id)"
    )
    return dg.MaterializeResult(
        metadata={
            **metadata,
            **landed.metadata(),
            "source": source,
            **({CHANGE_MARKER: marker} if marker else {}),
            "deleted_contacts": counts.deleted,
            "contacts_without_user_id": counts.without_user_id,
        }
    )


@dg.asset(
    group_name="sources",
    kinds={"duckdb"},
    owners=OWNERS,
    tags=layer("source", personal_data=True),
    pool="duckdb",
    retry_policy=SOURCE_RETRY,
    metadata=column_schema(INCOME_ENRICHMENT),
)
def income_enrichment(
    context: dg.AssetExecutionContext,
    income_file: EnrichmentFileResource,
    warehouse: WarehouseResource,
    rules: ProfileRulesResource,
) -> dg.MaterializeResult:
    """Income brackets from the enrichment vendor's latest drop, landed in raw.income_enrichment."""
    with fail_without_retry_on_permanent_errors(), warehouse.connect() as connection:
        content = file_sha256(Path(income_file.path))
        load = replace_income(connection, income_file.path, rules.max_shrink_fraction)
        metadata = table_metadata(connection, "raw.income_enrichment")
    context.log.info(f"Landed {load.rows} income rows from {income_file.path}")
    if load.conflicting_emails:
        context.log.warning(
            f"{load.conflicting_emails} emails appear with different income brackets; "
            "user_profiles takes the newest enriched_at, then the later line. E.g. "
            + "; ".join(load.conflict_examples)
        )
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "source_file": income_file.path,
            CONTENT_SHA256: content,
            "rows_without_email": load.without_email,
            "previous_rows": load.previous_rows if load.previous_rows is not None else "none",
            "emails_with_conflicting_brackets": load.conflicting_emails,
        }
    )


def land_drop(
    context: dg.AssetExecutionContext,
    replace: Callable[[duckdb.DuckDBPyConnection, str, float], DropLoad],
    path: str,
    table: str,
    warehouse: WarehouseResource,
    rules: ProfileRulesResource,
) -> dg.MaterializeResult:
    """Replace ``table`` with the drop at ``path``; its lines refused (raw.rejected_lines)
    are counted and shown."""
    with fail_without_retry_on_permanent_errors(), warehouse.connect() as connection:
        load = replace(connection, path, rules.max_shrink_fraction)
        metadata = table_metadata(connection, table)
    context.log.info(f"Landed {load.rows} rows from {path}")
    if load.rejected:
        context.log.warning(
            f"{load.rejected} lines of {path} were refused and kept with the reason in "
            "raw.rejected_lines, e.g. " + "; ".join(load.reject_examples)
        )
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "source_file": path,
            CONTENT_SHA256: file_sha256(Path(path)),
            "rejected_lines": load.rejected,
            "rejected_examples": "; ".join(load.reject_examples) or "none",
            "previous_rows": load.previous_rows if load.previous_rows is not None else "none",
        }
    )


@dg.asset(
    group_name="sources",
    kinds={"duckdb"},
    pool="duckdb",
    retry_policy=SOURCE_RETRY,
    metadata=column_schema(PRODUCTS),
    owners=OWNERS,
    tags=layer("source"),
)
def products(
    context: dg.AssetExecutionContext,
    catalog_files: CatalogFilesResource,
    warehouse: WarehouseResource,
    rules: ProfileRulesResource,
) -> dg.MaterializeResult:
    """The product catalog (sku, name, category, price, member_only) from its latest drop."""
    path = catalog_files.products_path
    return land_drop(context, replace_products, path, PRODUCTS.name, warehouse, rules)


@dg.asset(
    group_name="sources",
    kinds={"duckdb"},
    pool="duckdb",
    retry_policy=SOURCE_RETRY,
    metadata=column_schema(ORDERS),
    owners=OWNERS,
    tags=layer("source"),
)
def orders(
    context: dg.AssetExecutionContext,
    catalog_files: CatalogFilesResource,
    warehouse: WarehouseResource,
    rules: ProfileRulesResource,
) -> dg.MaterializeResult:
    """Historical orders (one row per line item) that the recommendation model learns from."""
    path = catalog_files.orders_path
    return land_drop(context, replace_orders, path, ORDERS.name, warehouse, rules)
