"""The ranking rules of personalize(), in one place: change a weight here and nothing else.

A candidate's score is the sum, over the user's recent purchases it is a neighbour of, of
``RECENCY_WEIGHTS[i] * similarity`` (i = 0 for the newest purchase), then multiplied by the
adjustments below. Products from the popular lists fill what is left after the neighbours,
scored by their buyers relative to the list's top product, with the same adjustments.
"""

from __future__ import annotations

import re

# Weight of recent_five_purchases.purchase_1 (newest) ... purchase_5.
RECENCY_WEIGHTS = (1.0, 0.8, 0.6, 0.4, 0.2)

# Membership statuses whose users may see (and are steered to) member-only products. Everyone
# else, including "expired", never sees them.
MEMBER_STATUSES = frozenset({"loyalty_member"})
MEMBER_ONLY_BOOST = 1.3

# Income brackets level_1 .. level_5 against the product's price band 1 (cheapest fifth of
# its category) .. 5: the multiplier by their distance, the last one for any farther.
PRICE_FIT = (1.25, 1.0, 0.8)
INCOME_LEVEL = re.compile(r"level_([1-9])")

# How much of the model each request reads: neighbours per purchase, popular candidates.
NEIGHBOURS_READ = 20
POPULAR_READ = 50


def is_member(membership_status: str | None) -> bool:
    return membership_status in MEMBER_STATUSES


def income_level(income_bracket: str | None) -> int | None:
    """``level_3`` -> 3; None when unknown or not a level."""
    found = INCOME_LEVEL.fullmatch(income_bracket or "")
    return int(found.group(1)) if found else None


def price_fit(level: int, price_band: int) -> float:
    return PRICE_FIT[min(abs(level - price_band), len(PRICE_FIT) - 1)]
