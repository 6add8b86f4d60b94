"""income_bracket, from the enrichment vendor's drop, matched on the profile's email."""

import dagster as dg

from assets.sources import income_enrichment
from personalization_pipeline.checks import value_rule
from personalization_pipeline.resources.rules import ProfileRulesResource
from personalization_pipeline.resources.warehouse import WarehouseResource
from personalization_pipeline.traits import TraitSource
from personalization_pipeline.warehouse.profiles import USER_PROFILES_TABLE

INCOME = TraitSource(
    name="income_enrichment",
    asset=income_enrichment,
    table="raw.income_enrichment",
    key="email",
    traits=["income_bracket"],
    # One email (in any case) several times: the newest enriched_at wins, then the later line of
    # the drop (the vendor's last word). income_enrichment counts and logs such conflicts.
    prefer="enriched_at DESC NULLS LAST, source_line DESC NULLS LAST",
    updated_at="enriched_at",
)


@dg.asset_check(
    asset="user_profiles",
    blocking=True,
    pool="duckdb",
    description="income_bracket is null or matches PROFILE_INCOME_BRACKET_PATTERN.",
)
def income_bracket_format(
    warehouse: WarehouseResource, rules: ProfileRulesResource
) -> dg.AssetCheckResult:
    pattern = rules.income_bracket_pattern
    return value_rule(
        warehouse, USER_PROFILES_TABLE, "income_bracket", "regexp_matches(income_bracket, ?)",
        pattern, f"income_bracket is null or matches {pattern}",
        f"rows whose income_bracket does not match {pattern}",
    )  # fmt: skip
