"""Warehouse models built in DuckDB SQL."""

from pathlib import Path

import dagster as dg

from assets.events import raw_events
from assets.sources import income_enrichment, salesforce_contacts
from personalization_pipeline.metadata import table_metadata
from personalization_pipeline.resources.warehouse import WarehouseResource
from personalization_pipeline.warehouse.contacts import contact_counts
from personalization_pipeline.warehouse.schema import ensure_schema

USER_PROFILES_SQL = Path(__file__).parent / "sql" / "user_profiles.sql"


@dg.asset(
    group_name="warehouse",
    kinds={"duckdb"},
    pool="duckdb",
    deps=[salesforce_contacts, income_enrichment, raw_events],
    metadata={
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn("user_id", "VARCHAR", description="App user id (Redis key)"),
                dg.TableColumn("email", "VARCHAR"),
                dg.TableColumn("membership_status", "VARCHAR"),
                dg.TableColumn("income_bracket", "VARCHAR", description="Null when not enriched"),
                dg.TableColumn("updated_at", "TIMESTAMP", description="Latest source change, UTC"),
            ]
        )
    },
)
def user_profiles(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """One profile per app user: live Salesforce contacts joined to their income bracket."""
    with warehouse.connect() as connection:
        # Identities come from the event drain; on a warehouse it never ran on they are empty.
        ensure_schema(connection)
        connection.execute(USER_PROFILES_SQL.read_text())
        metadata = table_metadata(connection, "analytics.user_profiles")
        contacts = contact_counts(connection)
        without_income, shared_ids, linked, ambiguous = connection.execute(
            """
            SELECT (SELECT count(*) FROM analytics.user_profiles WHERE income_bracket IS NULL),
                   (SELECT count(*) FROM (
                       SELECT user_id FROM raw.salesforce_contact
                       WHERE NOT is_deleted AND coalesce(trim(user_id), '') <> ''
                       GROUP BY user_id HAVING count(*) > 1)),
                   (SELECT count(user_id) FROM analytics.contact_email_links),
                   (SELECT count(*) FILTER (candidate_user_ids > 1)
                    FROM analytics.contact_email_links)
            """
        ).fetchone()
    context.log.info(
        f"Built {metadata['dagster/row_count']} profiles; of {contacts.without_user_id} live "
        f"contacts without a user id, {linked} were linked to one by email (identify events) and "
        f"{ambiguous} were not because several users identified with their email; {shared_ids} "
        "user ids are on several contacts (the most recently modified one wins)"
    )
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "profiles_without_income": without_income,
            "contacts_without_user_id": contacts.without_user_id,
            "user_ids_on_several_contacts": shared_ids,
            "contacts_linked_by_email": linked,
            "contacts_with_ambiguous_email": ambiguous,
        }
    )
