"""email and membership_status, from the user's Salesforce contact."""

import dagster as dg

from assets.sources import salesforce_contacts
from personalization_pipeline.checks import value_rule
from personalization_pipeline.resources.rules import ProfileRulesResource
from personalization_pipeline.resources.warehouse import WarehouseResource
from personalization_pipeline.traits import PROFILE_USERS, TraitSource
from personalization_pipeline.warehouse.profiles import USER_PROFILES_TABLE

# profile_users holds each user's contact (the one that carries the id, else the newest), with
# every column raw.salesforce_contact has: any landed Contact field can be a trait like these.
MEMBERSHIP = TraitSource(
    name="salesforce_membership",
    asset=salesforce_contacts,
    table=PROFILE_USERS,
    traits=["email", "membership_status"],
    updated_at="system_modstamp",
)


@dg.asset_check(
    asset="user_profiles",
    blocking=True,
    pool="duckdb",
    description="membership_status is null or one of PROFILE_MEMBERSHIP_STATUSES.",
)
def membership_status_allowed(
    warehouse: WarehouseResource, rules: ProfileRulesResource
) -> dg.AssetCheckResult:
    allowed = rules.allowed_membership_statuses
    return value_rule(
        warehouse, USER_PROFILES_TABLE, "membership_status", "list_contains(?, membership_status)",
        allowed, f"membership_status is null or one of {allowed}",
        f"rows with a membership_status outside {allowed}",
    )  # fmt: skip
