"""Warehouse models built in DuckDB SQL."""

from pathlib import Path

import dagster as dg

from assets.sources import income_enrichment, salesforce_contacts
from personalization_pipeline.metadata import table_metadata
from personalization_pipeline.resources.warehouse import WarehouseResource
from personalization_pipeline.warehouse.contacts import contact_counts

USER_PROFILES_SQL = Path(__file__).parent / "sql" / "user_profiles.sql"


@dg.asset(
    group_name="warehouse",
    kinds={"duckdb"},
    pool="duckdb",
    deps=[salesforce_contacts, income_enrichment],
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
        connection.execute(USER_PROFILES_SQL.read_text())
        metadata = table_metadata(connection, "analytics.user_profiles")
        contacts = contact_counts(connection)
        without_income, shared_ids = connection.execute(
            """
            SELECT (SELECT count(*) FROM analytics.user_profiles WHERE income_bracket IS NULL),
                   (SELECT count(*) FROM (
                       SELECT user_id FROM raw.salesforce_contact
                       WHERE NOT is_deleted AND coalesce(trim(user_id), '') <> ''
                       GROUP BY user_id HAVING count(*) > 1))
            """
        ).fetchone()
    context.log.info(
        f"Built {metadata['dagster/row_count']} profiles; {contacts.without_user_id} live contacts "
        f"have no user id and stay in raw.salesforce_contact only; {shared_ids} user ids are on "
        "several contacts (the most recently modified one wins)"
    )
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "profiles_without_income": without_income,
            "contacts_without_user_id": contacts.without_user_id,
            "user_ids_on_several_contacts": shared_ids,
        }
    )
