"""Asset checks. The checks on user_profiles are blocking: when one fails, the sync in that run
is skipped, and redis_user_profiles refuses to publish the table until a build passes them
(see assets/activation.py), so a bad extract never reaches the keyspace the product reads."""

from contextlib import closing

import dagster as dg

from assets.activation import PROFILE_TRAITS, redis_user_profiles
from assets.warehouse import user_profiles
from personalization_pipeline.metadata import markdown_table, mask_personal
from personalization_pipeline.resources.redis import RedisResource
from personalization_pipeline.resources.rules import ProfileRulesResource
from personalization_pipeline.resources.warehouse import WarehouseResource
from personalization_pipeline.sync.identify import IdentifyError, identify_fields, user_key
from personalization_pipeline.warehouse.guards import shrink_guard

EXAMPLES = 5


def _violations(
    warehouse: WarehouseResource, sql: str, parameters: list | None = None
) -> tuple[int, list[tuple]]:
    """Run a query returning (value, rows, ...) for offending values; total rows and the lines."""
    with warehouse.connect() as connection:
        rows = connection.execute(sql, parameters or []).fetchall()
    return sum(row[1] for row in rows), rows


def _result(
    violations: int, examples: list[tuple], what: str, columns: list[str], **counts: int
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=violations == 0,
        description=f"{violations} {what}" if violations else None,
        metadata={
            "violations": violations,
            **counts,
            "examples": dg.MetadataValue.md(markdown_table(columns, examples[:EXAMPLES])),
        },
    )


PADDED = "leading or trailing space"


@dg.asset_check(asset=user_profiles, blocking=True, pool="duckdb")
def user_profiles_user_id_valid(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """user_id is never null or blank, has no leading or trailing whitespace ('U1 ' and 'U1'
    would be two Redis keys for one user) and appears once: it is the Redis key."""
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
        "rows with a null, blank, space-padded or duplicate user_id",
        ["user_id", "rows", "problem"],
        user_ids_with_spaces=sum(rows for _, rows, problem in offending if problem == PADDED),
    )


@dg.asset_check(asset=user_profiles, blocking=True, pool="duckdb")
def user_profiles_membership_status_allowed(
    warehouse: WarehouseResource, rules: ProfileRulesResource
) -> dg.AssetCheckResult:
    """membership_status is null or one of PROFILE_MEMBERSHIP_STATUSES."""
    allowed = rules.allowed_membership_statuses
    return _value_rule(
        warehouse, "membership_status", "list_contains(?, membership_status)", allowed,
        f"rows with a membership_status outside {allowed}",
    )  # fmt: skip


@dg.asset_check(asset=user_profiles, blocking=True, pool="duckdb")
def user_profiles_income_bracket_format(
    warehouse: WarehouseResource, rules: ProfileRulesResource
) -> dg.AssetCheckResult:
    """income_bracket is null or matches PROFILE_INCOME_BRACKET_PATTERN."""
    pattern = rules.income_bracket_pattern
    return _value_rule(
        warehouse, "income_bracket", "regexp_matches(income_bracket, ?)", pattern,
        f"rows whose income_bracket does not match {pattern}",
    )  # fmt: skip


def _value_rule(
    warehouse: WarehouseResource, column: str, rule: str, parameter: object, what: str
) -> dg.AssetCheckResult:
    """Every non-null value of `column` satisfies the SQL `rule` (with one ? for `parameter`)."""
    violations, examples = _violations(
        warehouse,
        f"""
        SELECT {column}, count(*) FROM analytics.user_profiles
        WHERE {column} IS NOT NULL AND NOT {rule}
        GROUP BY ALL ORDER BY count(*) DESC, {column}
        """,
        [parameter],
    )
    return _result(violations, examples, what, [column, "rows"])


@dg.asset_check(asset=user_profiles, blocking=True, pool="duckdb")
def user_profiles_shrink_guard(
    warehouse: WarehouseResource, rules: ProfileRulesResource
) -> dg.AssetCheckResult:
    """user_profiles is not empty and lost at most PROFILE_MAX_SHRINK of its rows since the last
    build that passed (see warehouse/guards.py)."""
    table = "analytics.user_profiles"
    with warehouse.connect() as connection:
        verdict = shrink_guard(connection, table, rules.max_shrink_fraction)
    return dg.AssetCheckResult(
        passed=verdict.passed,
        description=None
        if verdict.passed
        else (
            f"{verdict.explain(table, rules.max_shrink_fraction)}; Redis keeps the last good "
            "profiles. If the rows really left, raise PROFILE_MAX_SHRINK for one run"
        ),
        metadata={
            "row_count": verdict.rows,
            "baseline_row_count": verdict.baseline if verdict.baseline is not None else "none",
            "lost_fraction": round(verdict.lost_fraction, 4),
            "max_shrink_fraction": rules.max_shrink_fraction,
        },
    )


@dg.asset_check(asset=redis_user_profiles, pool="duckdb")
def redis_user_profiles_readback(
    context: dg.AssetCheckExecutionContext,
    warehouse: WarehouseResource,
    redis: RedisResource,
    rules: ProfileRulesResource,
) -> dg.AssetCheckResult:
    """A random sample of profiles read back from Redis equals the warehouse, field by field."""
    columns = ["user_id", *PROFILE_TRAITS]
    with warehouse.connect() as connection:
        sample = connection.execute(
            f"SELECT {', '.join(columns)} FROM analytics.user_profiles "
            f"USING SAMPLE reservoir({int(rules.readback_sample_size)} ROWS)"
        ).fetchall()
    keys, expected = [], []
    for row in sample:
        try:
            fields = identify_fields(traits=dict(zip(PROFILE_TRAITS, row[1:], strict=True)))
            keys.append(user_key(row[0], redis.prefix))
        except IdentifyError:
            continue  # rejected rows are never written, so there is nothing to read back
        expected.append(fields)
    with closing(redis.get_client()) as client:
        pipeline = client.pipeline(transaction=False)
        for key in keys:
            pipeline.hmget(key, PROFILE_TRAITS)
        stored_values = pipeline.execute()
    mismatches = []
    for key, want, got in zip(keys, expected, stored_values, strict=True):
        stored = {f: v.decode() for f, v in zip(PROFILE_TRAITS, got, strict=True) if v is not None}
        if stored != want:
            mismatches.append((key, mask_personal(want), mask_personal(stored)))
    description = None
    if mismatches:
        description = (
            f"{len(mismatches)} of {len(keys)} sampled profiles differ from the warehouse: "
            "the product reads wrong or missing profiles. The next sync repairs a Redis that "
            "lost its data; run redis_profiles_job in full mode to repair any other drift"
        )
        context.log.error(description)
    return dg.AssetCheckResult(
        passed=not mismatches,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "sampled": len(keys),
            "mismatches": len(mismatches),
            "examples": dg.MetadataValue.md(
                markdown_table(["key", "warehouse", "redis"], mismatches[:EXAMPLES])
            ),
        },
    )
