"""Data-quality rules for user_profiles, checked before anything reaches Redis."""

from __future__ import annotations

import dagster as dg

DEFAULT_MEMBERSHIP_STATUSES = ("loyalty_member", "expired", "trial", "prospect")
DEFAULT_INCOME_BRACKET_PATTERN = r"^level_[1-5]$"
DEFAULT_MAX_SHRINK_FRACTION = 0.2
DEFAULT_READBACK_SAMPLE_SIZE = 100


class ProfileRulesResource(dg.ConfigurableResource):
    """Allowed values and guard thresholds used by the asset checks."""

    allowed_membership_statuses: list[str] = list(DEFAULT_MEMBERSHIP_STATUSES)  # noqa: RUF012
    # RE2 syntax (DuckDB's regexp_matches); anchor it to match the whole value.
    income_bracket_pattern: str = DEFAULT_INCOME_BRACKET_PATTERN
    # Fail when user_profiles has lost more than this share of its rows since the last good build.
    max_shrink_fraction: float = DEFAULT_MAX_SHRINK_FRACTION
    readback_sample_size: int = DEFAULT_READBACK_SAMPLE_SIZE
