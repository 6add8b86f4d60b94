"""user_profiles, assembled from the trait sources in assets/traits/, and its checks."""

import hashlib
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from assets import OWNERS, layer, traits
from assets.events import raw_events
from personalization_pipeline.checks import rule_result, violations
from personalization_pipeline.errors import PermanentError
from personalization_pipeline.metadata import column_schema, table_metadata
from personalization_pipeline.resources.rules import ProfileRulesResource
from personalization_pipeline.resources.warehouse import WarehouseResource
from personalization_pipeline.traits import PROFILE_USERS, TraitSource, discover
from personalization_pipeline.warehouse.contacts import contact_counts
from personalization_pipeline.warehouse.guards import shrink_guard as table_shrink_guard
from personalization_pipeline.warehouse.profiles import (
    USER_PROFILES_TABLE,
    build_user_profiles,
    user_profiles_sql,
)
from personalization_pipeline.warehouse.schema import ensure_schema
from personalization_pipeline.warehouse.tables import SALESFORCE_CONTACT, Column, Table

PROFILE_USERS_SQL = Path(__file__).parent / "sql" / "profile_users.sql"


def user_profiles_asset(sources: Sequence[TraitSource]) -> dg.AssetsDefinition:
    """user_profiles: the profile users joined to every trait source (see assets/traits/)."""
    # The model is its SQL: a changed query (or a new source) is a new code version in the UI.
    sql = PROFILE_USERS_SQL.read_text() + user_profiles_sql(sources)
    listed = "; ".join(
        f"{source.name} ({', '.join(source.trait_columns.values())})" for source in sources
    )

    @dg.asset(
        name="user_profiles",
        group_name="warehouse",
        kinds={"duckdb"},
        owners=OWNERS,
        tags=layer("model", personal_data=True),
        pool="duckdb",
        deps=[*dict.fromkeys([*(source.asset_key for source in sources), raw_events.key])],
        metadata={
            **column_schema(profile_table(sources)),
            "trait_sources": listed,
        },
        code_version=hashlib.sha256(sql.encode()).hexdigest()[:12],
        description=(
            "One profile per app user: live Salesforce contacts with an app user id (or linked "
            f"to one by email), joined to the trait sources: {listed}."
        ),
    )
    def user_profiles(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        with warehouse.connect() as connection:
            # Identities come from the event drain; on a warehouse it never ran on they are empty.
            ensure_schema(connection)
            try:
                build = build_user_profiles(connection, sources, PROFILE_USERS_SQL)
            except PermanentError as error:
                raise dg.Failure(description=str(error), allow_retries=False) from error
            metadata = table_metadata(connection, USER_PROFILES_TABLE)
            contacts = contact_counts(connection)
            shared_ids, linked, ambiguous = connection.execute(
                """
                SELECT (SELECT count(*) FROM (
                           SELECT user_id FROM analytics.live_contacts WHERE has_user_id
                           GROUP BY user_id HAVING count(*) > 1)),
                       (SELECT count(user_id) FROM analytics.contact_email_links),
                       (SELECT count(*) FILTER (candidate_user_ids > 1)
                        FROM analytics.contact_email_links)
                """
            ).fetchone()
        context.log.info(
            f"Built {build.profiles} profiles from {len(sources)} trait sources; of "
            f"{contacts.without_user_id} live contacts without a user id, {linked} were linked to "
            f"one by email (identify events) and {ambiguous} were not because several users "
            f"identified with their email; {shared_ids} user ids are on several contacts (the "
            "most recently modified one wins)"
        )
        return dg.MaterializeResult(
            metadata={
                **metadata,
                "profiles_with_trait": dg.MetadataValue.json(build.traits_set),
                "contacts_without_user_id": contacts.without_user_id,
                "user_ids_on_several_contacts": shared_ids,
                "contacts_linked_by_email": linked,
                "contacts_with_ambiguous_email": ambiguous,
            }
        )

    return user_profiles


def profile_table(sources: Sequence[TraitSource]) -> Table:
    """user_profiles' columns: the user id, each source's traits, updated_at."""
    columns = [Column("user_id", "VARCHAR", "App user id (the Redis key)")]
    for source in sources:
        for column, trait in source.trait_columns.items():
            columns.append(
                Column(trait, source_column_type(source, column), f"From {source.name}: {column}")
            )
    columns.append(Column("updated_at", "TIMESTAMP", "Latest change among the sources, UTC"))
    description = "One row per app user: the traits the sync sends."
    return Table(USER_PROFILES_TABLE, description, tuple(columns))


def source_column_type(source: TraitSource, column: str) -> str:
    """The type the source's asset declares for the column (profile_users has the contact's
    columns); "unknown" when nothing declares it (the materialization shows the real one)."""
    declared = source.declared_types() or {}
    if source.table == PROFILE_USERS:
        declared = {c.name: c.type for c in SALESFORCE_CONTACT.columns}
    return declared.get(column, "unknown")


TRAIT_SOURCES = discover(traits)
user_profiles = user_profiles_asset(TRAIT_SOURCES)


# Checks on user_profiles. They are blocking: when one fails, the sync in that run is skipped,
# and redis_user_profiles refuses to publish the table until a build passes them (see
# personalization_pipeline/synced_tables.py), so a bad extract never reaches Redis. The rules
# on one trait live beside its source, in assets/traits/.

PADDED = "leading or trailing space"
USER_ID_RULE = "every user_id is set, unpadded and unique (it is the Redis key)"


@dg.asset_check(asset=user_profiles, blocking=True, pool="duckdb", description=USER_ID_RULE)
def user_id_valid(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    # 'U1 ' and 'U1' would be two Redis keys for one user.
    count, offending = violations(
        warehouse,
        r"""
        SELECT user_id, count(*),
               CASE WHEN coalesce(trim(user_id), '') = '' THEN 'null or blank'
                    WHEN regexp_matches(user_id, '^\s|\s$') THEN ?
                    ELSE 'duplicate' END AS problem
        FROM analytics.user_profiles
        GROUP BY user_id
        HAVING count(*) > 1 OR coalesce(trim(user_id), '') = ''
            OR regexp_matches(user_id, '^\s|\s$')
        ORDER BY count(*) DESC, user_id
        """,
        [PADDED],
    )
    return rule_result(
        count,
        [(f"'{user_id}'" if user_id is not None else None, *rest) for user_id, *rest in offending],
        USER_ID_RULE,
        "rows with a null, blank, space-padded or duplicate user_id",
        ["user_id", "rows", "problem"],
        user_ids_with_spaces=sum(rows for _, rows, problem in offending if problem == PADDED),
    )


@dg.asset_check(
    asset=user_profiles,
    blocking=True,
    pool="duckdb",
    description=(
        "user_profiles is not empty and lost at most PROFILE_MAX_SHRINK of its rows since the "
        "last build that passed."
    ),
)
def shrink_guard(warehouse: WarehouseResource, rules: ProfileRulesResource) -> dg.AssetCheckResult:
    table = USER_PROFILES_TABLE
    limit = rules.max_shrink_fraction
    with warehouse.connect() as connection:
        verdict = table_shrink_guard(connection, table, limit)
    return dg.AssetCheckResult(
        passed=verdict.passed,
        description=f"Holds: not empty, lost at most {limit:.0%} since the last good build"
        if verdict.passed
        else (
            f"{verdict.explain(table, limit)}; Redis keeps the last good profiles. If the rows "
            "really left, raise PROFILE_MAX_SHRINK for one run"
        ),
        metadata={
            "row_count": verdict.rows,
            # -1: no build has passed yet (one type across runs keeps the UI's plots whole).
            "baseline_row_count": verdict.baseline if verdict.baseline is not None else -1,
            "lost_fraction": float(round(verdict.lost_fraction, 4)),
            "max_shrink_fraction": float(limit),
        },
    )
