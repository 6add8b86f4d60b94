"""personalize(): ranked recommendations for one user, read from Redis in two round trips.

Round 1, one pipeline: the profile hash (membership, income bracket and the gateway's
``recent_five_purchases.purchase_1..5``), the user's purchase log (``keys.purchases_key``,
same slot: everything the user ever bought that is still logged, to leave out) and the popular
list. Round 2, one pipeline: the ``similar:<sku>`` sorted set of each recent purchase. A user
without purchases needs no round 2. Every candidate arrives with what the rules need
(``keys.ProductMember``), so there is no third read. Keys are computed here, one command per
key: on Redis Cluster each round is one pipeline fanned out to the nodes in parallel.

The reads are planned by a generator (:func:`_plan`) that yields one round's commands and is
sent their replies, so the synchronous and the asyncio client share every line of the logic.
The rules and their weights are in ``serving/rules.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import orjson

from personalization_pipeline.events.effects import PURCHASE_FIELD, PURCHASES_SHOWN
from personalization_pipeline.keys import (
    ProductMember,
    popular_key,
    purchases_key,
    similar_key,
    user_key,
)
from personalization_pipeline.serving import rules

__all__ = ["Personalization", "Recommendation", "personalize", "personalize_async"]

log = logging.getLogger(__name__)

Read = Callable[[Any], Any]  # queues one command on a (sync or asyncio) pipeline
Plan = Generator[list[Read], list[Any], "Personalization"]

RECENT_FIELDS = [f"{PURCHASE_FIELD}{n}" for n in range(1, PURCHASES_SHOWN + 1)]

# The similar and popular lists hold one catalog's members over and over: each is decoded once
# per process, not once per request (a member is immutable: a changed product is a new member).
# A plain dict, emptied when full: an lru_cache lookup cost almost as much as the decoding.
MEMBERS_KEPT = 100_000
_decoded: dict[str | bytes, ProductMember] = {}


@dataclass(frozen=True)
class Recommendation:
    sku: str
    score: float
    category: str
    price_band: int
    member_only: bool
    source: str  # "similar": a neighbour of a recent purchase; "popular": a popular list
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Personalization:
    user_id: str
    known_user: bool  # a profile hash exists
    cold_start: bool  # no purchases to start from: popular products only
    recommendations: tuple[Recommendation, ...]

    def to_json(self) -> bytes:
        """The HTTP answer, camelCase as RudderStack's payloads are."""
        return orjson.dumps(
            {
                "userId": self.user_id,
                "knownUser": self.known_user,
                "coldStart": self.cold_start,
                "recommendations": [
                    {
                        "sku": r.sku,
                        "score": r.score,
                        "category": r.category,
                        "priceBand": r.price_band,
                        "memberOnly": r.member_only,
                        "source": r.source,
                        "reasons": r.reasons,
                    }
                    for r in self.recommendations
                ],
            }
        )


def personalize(
    client: Any, user_id: str, limit: int = 10, prefix: str = "", category: str | None = None
) -> Personalization:
    """Recommendations for ``user_id`` with a redis-py client (Redis or RedisCluster).

    ``category`` keeps only that category's products (a category page), and its own popular
    list is the fallback. Raises ValueError for a blank user id.
    """
    plan = _plan(user_id, limit, prefix, category)
    reads = next(plan)
    while True:
        with client.pipeline(transaction=False) as pipe:
            for read in reads:
                read(pipe)
            replies = pipe.execute()
        try:
            reads = plan.send(replies)
        except StopIteration as done:
            return done.value


async def personalize_async(
    client: Any, user_id: str, limit: int = 10, prefix: str = "", category: str | None = None
) -> Personalization:
    """:func:`personalize` with a redis.asyncio client."""
    plan = _plan(user_id, limit, prefix, category)
    reads = next(plan)
    while True:
        async with client.pipeline(transaction=False) as pipe:
            for read in reads:
                read(pipe)
            replies = await pipe.execute()
        try:
            reads = plan.send(replies)
        except StopIteration as done:
            return done.value


def _zrange(key: str, count: int) -> Read:
    return lambda pipe: pipe.zrange(key, 0, count - 1, desc=True, withscores=True)


def _plan(user_id: str, limit: int, prefix: str, category: str | None) -> Plan:
    profile_key = user_key(user_id, prefix)
    profile, logged, popular = yield [
        lambda pipe: pipe.hgetall(profile_key),
        lambda pipe: pipe.get(purchases_key(profile_key)),
        _zrange(popular_key(category, prefix), rules.POPULAR_READ),
    ]
    profile = {_text(name): _text(value) for name, value in profile.items()}
    recent = list(dict.fromkeys(profile[f] for f in RECENT_FIELDS if profile.get(f)))
    neighbours = []
    if recent:
        neighbours = yield [
            _zrange(similar_key(sku, prefix), rules.NEIGHBOURS_READ) for sku in recent
        ]
    ranking = _Ranking(profile, {*recent, *_logged_skus(logged, user_id)}, category)
    chosen = ranking.similar(recent, neighbours, limit)
    if len(chosen) < limit:
        chosen += ranking.popular(popular, {r.sku for r in chosen}, limit - len(chosen))
    return Personalization(
        user_id=user_id,
        known_user=bool(profile),
        cold_start=not recent,
        recommendations=tuple(chosen),
    )


class _Ranking:
    """The rules of serving/rules.py applied to one user's candidates.

    Every candidate is scored, but reasons are written only for what is returned: about a
    hundred candidates compete for ten places.
    """

    def __init__(self, profile: dict[str, str], bought: set[str], category: str | None) -> None:
        self.member = rules.is_member(profile.get("membership_status"))
        self.level = rules.income_level(profile.get("income_bracket"))
        self.bought = bought
        self.category = category
        # (member_only, price_band) -> (multiplier, why): a user meets only a few such pairs.
        self._adjustments: dict[tuple[bool, int], tuple[float, tuple[str, ...]]] = {}

    def _factor(self, product: ProductMember) -> float | None:
        """The product's multiplier, or None when it must not be shown."""
        if product.sku in self.bought or (product.member_only and not self.member):
            return None
        if self.category is not None and product.category != self.category:
            return None
        pair = (product.member_only, product.price_band)
        adjustment = self._adjustments.get(pair)
        if adjustment is None:
            adjustment = self._adjustments[pair] = self._adjustment(*pair)
        return adjustment[0]

    def _why(self, product: ProductMember) -> tuple[str, ...]:
        """The reasons of the multiplier of a product _factor() was asked about."""
        return self._adjustments[product.member_only, product.price_band][1]

    def _adjustment(self, member_only: bool, price_band: int) -> tuple[float, tuple[str, ...]]:
        factor, why = 1.0, []
        if member_only:
            factor *= rules.MEMBER_ONLY_BOOST
            why.append(f"member-only, boosted for loyalty members (x{rules.MEMBER_ONLY_BOOST})")
        if self.level is not None:
            fit = rules.price_fit(self.level, price_band)
            if fit != 1.0:
                factor *= fit
                verdict = "suits" if fit > 1 else "is far from"
                why.append(f"price band {price_band} {verdict} income level_{self.level} (x{fit})")
        return factor, tuple(why)

    def similar(
        self, recent: list[str], neighbour_lists: list[list], limit: int
    ) -> list[Recommendation]:
        """The best ``limit`` neighbours of the recent purchases."""
        scores: dict[str, float] = {}
        products: dict[str, ProductMember] = {}
        for position, neighbours in enumerate(neighbour_lists):
            weight = rules.RECENCY_WEIGHTS[position]
            for member, similarity in neighbours:
                product = _product(member)
                products[product.sku] = product
                scores[product.sku] = scores.get(product.sku, 0.0) + weight * similarity
        ranked = []
        for sku, score in scores.items():
            factor = self._factor(products[sku])
            if factor is not None:
                ranked.append((-round(score * factor, 6), sku))
        best = sorted(ranked)[:limit]
        because: dict[str, list[tuple[float, int, float]]] = {sku: [] for _, sku in best}
        for position, neighbours in enumerate(neighbour_lists):
            weight = rules.RECENCY_WEIGHTS[position]
            for member, similarity in neighbours:
                found = because.get(_product(member).sku)
                if found is not None:
                    found.append((weight * similarity, position, similarity))
        chosen = []
        for score, sku in best:
            reasons = [
                f"similar to {recent[position]}, your purchase #{position + 1} "
                f"(similarity {similarity:.2f} x recency {rules.RECENCY_WEIGHTS[position]})"
                for _, position, similarity in sorted(because[sku], key=lambda c: -c[0])
            ]
            product = products[sku]
            chosen.append(_recommend(product, -score, "similar", [*reasons, *self._why(product)]))
        return chosen

    def popular(self, popular: list, taken: set[str], count: int) -> list[Recommendation]:
        """The best ``count`` of a popular list, leaving out ``taken``."""
        top = popular[0][1] if popular else 1.0
        where = f"popular in {self.category}" if self.category else "popular overall"
        ranked = []
        for rank, (member, buyers) in enumerate(popular, start=1):
            product = _product(member)
            factor = None if product.sku in taken else self._factor(product)
            if factor is not None:
                score = round(buyers / top * factor, 6)
                ranked.append((-score, product.sku, rank, product, buyers))
        chosen = []
        for score, _, rank, product, buyers in sorted(ranked)[:count]:
            reason = f"{where} (#{rank}, {buyers:.0f} buyers)"
            chosen.append(_recommend(product, -score, "popular", [reason, *self._why(product)]))
        return chosen


def _product(member: str | bytes) -> ProductMember:
    product = _decoded.get(member)
    if product is None:
        if len(_decoded) >= MEMBERS_KEPT:
            _decoded.clear()
        product = _decoded[member] = ProductMember.parse(member)
    return product


def _recommend(product: ProductMember, score: float, source: str, reasons: list[str]):
    return Recommendation(
        sku=product.sku,
        score=round(score, 6),
        category=product.category,
        price_band=product.price_band,
        member_only=product.member_only,
        source=source,
        reasons=tuple(reasons),
    )


def _logged_skus(logged: bytes | str | None, user_id: str) -> list[str]:
    """Every SKU in the purchase log (``[[sortkey, messageId, sku, ...], ...]``)."""
    if logged is None:
        return []
    try:
        return [sku for entry in orjson.loads(logged) for sku in entry[2:]]
    except (orjson.JSONDecodeError, TypeError):
        # Only the gateway's script writes the log; recommending anyway beats failing.
        log.warning("The purchase log of user %s is not the gateway's JSON; ignored", user_id)
        return []


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
