"""Warehouse models built in DuckDB SQL."""

from pathlib import Path

import dagster as dg

from assets.sources import income_enrichment, salesforce_contacts
from personalization_pipeline.metadata import table_metadata
from personalization_pipeline.resources.warehouse import WarehouseResource

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
        without_income, skipped = connection.execute(
            """
            SELECT (SELECT count(*) FROM analytics.user_profiles WHERE income_bracket IS NULL),
                   (SELECT count(*) FROM raw.salesforce_contact
                    WHERE NOT is_deleted AND coalesce(trim(user_id), '') = '')
            """
        ).fetchone()
    context.log.info(
        f"Built {metadata['dagster/row_count']} profiles; {skipped} live contacts have no user id "
        "and stay in raw.salesforce_contact only"
    )
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "profiles_without_income": without_income,
            "contacts_without_user_id": skipped,
        }
    )
