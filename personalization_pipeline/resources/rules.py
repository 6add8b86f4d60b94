"""Data-quality rules for user_profiles, checked before anything reaches Redis."""

from __future__ import annotations

import dagster as dg

from personalization_pipeline.settings import ProfileRules, RedisSettings

DEFAULT_MEMBERSHIP_STATUSES = ProfileRules.membership_statuses
DEFAULT_INCOME_BRACKET_PATTERN = ProfileRules.income_bracket_pattern
DEFAULT_MAX_SHRINK_FRACTION = ProfileRules.max_shrink
DEFAULT_READBACK_SAMPLE_SIZE = RedisSettings.readback_sample


class ProfileRulesResource(dg.ConfigurableResource):
    """Allowed values and guard thresholds used by the asset checks."""

    allowed_membership_statuses: list[str] = list(DEFAULT_MEMBERSHIP_STATUSES)  # noqa: RUF012
    # RE2 syntax (DuckDB's regexp_matches); anchor it to match the whole value.
    income_bracket_pattern: str = DEFAULT_INCOME_BRACKET_PATTERN
    # Fail when user_profiles has lost more than this share of its rows since the last good build.
    max_shrink_fraction: float = DEFAULT_MAX_SHRINK_FRACTION
    readback_sample_size: int = DEFAULT_READBACK_SAMPLE_SIZE
