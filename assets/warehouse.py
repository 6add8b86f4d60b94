"""Warehouse models built in DuckDB SQL, and their checks."""

import hashlib
from pathlib import Path

import dagster as dg

from assets.events import raw_events
from assets.sources import income_enrichment, salesforce_contacts
from personalization_pipeline.metadata import column_schema, markdown_table, table_metadata
from personalization_pipeline.resources.rules import ProfileRulesResource
from personalization_pipeline.resources.warehouse import WarehouseResource
from personalization_pipeline.warehouse.contacts import contact_counts
from personalization_pipeline.warehouse.guards import shrink_guard as table_shrink_guard
from personalization_pipeline.warehouse.schema import ensure_schema
from personalization_pipeline.warehouse.tables import USER_PROFILES

USER_PROFILES_SQL = Path(__file__).parent / "sql" / "user_profiles.sql"
# The model is its SQL: a changed query is a new code version, which the UI flags.
USER_PROFILES_CODE_VERSION = hashlib.sha256(USER_PROFILES_SQL.read_bytes()).hexdigest()[:12]


@dg.asset(
    group_name="warehouse",
    kinds={"duckdb"},
    pool="duckdb",
    deps=[salesforce_contacts, income_enrichment, raw_events],
    metadata=column_schema(USER_PROFILES),
    code_version=USER_PROFILES_CODE_VERSION,
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
                       SELECT user_id FROM analytics.live_contacts WHERE has_user_id
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


# Checks on user_profiles. They are blocking: when one fails, the sync in that run is skipped,
# and redis_user_profiles refuses to publish the table until a build passes them (see
# personalization_pipeline/synced_tables.py), so a bad extract never reaches Redis.

CHECK_EXAMPLES = 5
PADDED = "leading or trailing space"


def _violations(
    warehouse: WarehouseResource, sql: str, parameters: list | None = None
) -> tuple[int, list[tuple]]:
    """Run a query returning (value, rows, ...) for offending values; total rows and the lines."""
    with warehouse.connect() as connection:
        rows = connection.execute(sql, parameters or []).fetchall()
    return sum(row[1] for row in rows), rows


def _result(
    violations: int, examples: list[tuple], rule: str, what: str, columns: list[str], **counts: int
) -> dg.AssetCheckResult:
    """A passing check says the rule it holds; a failing one counts what broke it."""
    return dg.AssetCheckResult(
        passed=violations == 0,
        description=f"{violations} {what}" if violations else f"Holds: {rule}",
        metadata={
            "violations": violations,
            **counts,
            "examples": dg.MetadataValue.md(markdown_table(columns, examples[:CHECK_EXAMPLES])),
        },
    )


USER_ID_RULE = "every user_id is set, unpadded and unique (it is the Redis key)"


@dg.asset_check(asset=user_profiles, blocking=True, pool="duckdb", description=USER_ID_RULE)
def user_id_valid(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    # 'U1 ' and 'U1' would be two Redis keys for one user.
    violations, offending = _violations(
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
    return _result(
        violations,
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
    description="membership_status is null or one of PROFILE_MEMBERSHIP_STATUSES.",
)
def membership_status_allowed(
    warehouse: WarehouseResource, rules: ProfileRulesResource
) -> dg.AssetCheckResult:
    allowed = rules.allowed_membership_statuses
    return _value_rule(
        warehouse, "membership_status", "list_contains(?, membership_status)", allowed,
        f"membership_status is null or one of {allowed}",
        f"rows with a membership_status outside {allowed}",
    )  # fmt: skip


@dg.asset_check(
    asset=user_profiles,
    blocking=True,
    pool="duckdb",
    description="income_bracket is null or matches PROFILE_INCOME_BRACKET_PATTERN.",
)
def income_bracket_format(
    warehouse: WarehouseResource, rules: ProfileRulesResource
) -> dg.AssetCheckResult:
    pattern = rules.income_bracket_pattern
    return _value_rule(
        warehouse, "income_bracket", "regexp_matches(income_bracket, ?)", pattern,
        f"income_bracket is null or matches {pattern}",
        f"rows whose income_bracket does not match {pattern}",
    )  # fmt: skip


def _value_rule(
    warehouse: WarehouseResource, column: str, sql: str, parameter: object, rule: str, what: str
) -> dg.AssetCheckResult:
    """Every non-null value of `column` satisfies the SQL `sql` (with one ? for `parameter`)."""
    violations, examples = _violations(
        warehouse,
        f"""
        SELECT {column}, count(*) FROM analytics.user_profiles
        WHERE {column} IS NOT NULL AND NOT {sql}
        GROUP BY ALL ORDER BY count(*) DESC, {column}
        """,
        [parameter],
    )
    return _result(violations, examples, rule, what, [column, "rows"])


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
    table = "analytics.user_profiles"
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
