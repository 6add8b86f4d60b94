"""Sources: land Salesforce Contacts and the income-enrichment drop in the warehouse as is."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from personalization_pipeline.errors import MissingColumnsError
from personalization_pipeline.metadata import table_metadata
from personalization_pipeline.resources.enrichment import EnrichmentFileResource
from personalization_pipeline.resources.salesforce import ContactSource
from personalization_pipeline.resources.warehouse import WarehouseResource
from personalization_pipeline.warehouse.contacts import replace_contacts
from personalization_pipeline.warehouse.income import replace_income

# Sources talk to systems outside our control; transient failures are retried with backoff.
SOURCE_RETRY = dg.RetryPolicy(
    max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


@contextmanager
def fail_without_retry_on_bad_input() -> Iterator[None]:
    """A malformed or missing source file will not fix itself: fail at once, no retries."""
    try:
        yield
    except (MissingColumnsError, FileNotFoundError, ValueError) as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error


@dg.asset(
    group_name="sources", kinds={"salesforce", "duckdb"}, pool="duckdb", retry_policy=SOURCE_RETRY
)
def salesforce_contacts(
    context: dg.AssetExecutionContext, salesforce: ContactSource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Salesforce Contacts, deleted ones included, landed in raw.salesforce_contact."""
    context.log.info(f"Reading contacts from {salesforce.describe()}")
    with fail_without_retry_on_bad_input(), warehouse.connect() as connection:
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


@dg.asset(group_name="sources", kinds={"duckdb"}, pool="duckdb", retry_policy=SOURCE_RETRY)
def income_enrichment(
    context: dg.AssetExecutionContext,
    income_file: EnrichmentFileResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """Income brackets from the enrichment vendor's latest drop, landed in raw.income_enrichment."""
    with fail_without_retry_on_bad_input(), warehouse.connect() as connection:
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
