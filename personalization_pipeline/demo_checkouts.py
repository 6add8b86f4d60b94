"""The demo's checkouts: each example user's latest sample order, checked out through the
gateway's own intake path, and what personalize() then answers for them.

The sample orders are history in the warehouse (raw.orders); they never pass the gateway, so
they are not in a user's recent purchases in Redis. The demo plays the app's part: it sends
the latest order of each example user as the ``Order Completed`` track event an SDK would send,
through the code behind ``POST /v1/track`` (``accept_events``, then ``EventEffects``). The
profile hash gets ``recent_five_purchases``, the purchase log gets the order, and the event
stream gets the event, which the demo's drain lands in raw.events. The messageId is the
order's, so running the demo again adds nothing.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from personalization_pipeline.events.config import DEMO_WRITE_KEY, GatewaySettings
from personalization_pipeline.events.connection import async_client
from personalization_pipeline.events.effects import EventEffects
from personalization_pipeline.events.intake import accept_events
from personalization_pipeline.serving.personalize import Personalization, personalize
from personalization_pipeline.settings import current

CHECKOUT_EVENT = "Order Completed"


def latest_orders(orders_path: str | Path, users: Iterable[str]) -> dict[str, dict[str, Any]]:
    """user → {order_id, ordered_at, skus} of their most recent order in the order file."""
    wanted = set(users)
    orders: dict[str, dict[str, Any]] = {}
    with Path(orders_path).open(newline="") as handle:
        for line in csv.DictReader(handle):
            user = line["user_id"].strip()
            if user not in wanted:
                continue
            latest = orders.get(user)
            if latest is None or line["ordered_at"] > latest["ordered_at"]:
                latest = orders[user] = {"order_id": line["order_id"],
                                         "ordered_at": line["ordered_at"], "skus": []}  # fmt: skip
            if line["order_id"] == latest["order_id"]:
                latest["skus"].append(line["sku"].strip())
    return orders


def checkout_events(orders: dict[str, dict[str, Any]]) -> bytes:
    """A /v1/batch body: one checkout per user, dated when the order was placed."""
    batch = [
        {
            "type": "track",
            "userId": user,
            "event": CHECKOUT_EVENT,
            "messageId": f"demo-checkout-{order['order_id']}",
            "timestamp": order["ordered_at"],
            "properties": {
                "order_id": order["order_id"],
                "products": [{"sku": sku} for sku in order["skus"]],
            },
        }
        for user, order in orders.items()
    ]
    return orjson.dumps({"batch": batch})


def check_out(orders: dict[str, dict[str, Any]]) -> None:
    """Store the checkouts as the gateway does, with the gateway's settings (the demo's write
    key when EVENTS_WRITE_KEYS is unset, as `make serve`; no key is checked in process)."""
    configured = current()
    if not configured.events.write_keys:
        events = dataclasses.replace(configured.events, write_keys=(DEMO_WRITE_KEY,))
        configured = dataclasses.replace(configured, events=events)
    settings = GatewaySettings.from_settings(configured)
    accepted = accept_events(checkout_events(orders), None, datetime.now(UTC), "127.0.0.1")

    async def store() -> None:
        client = async_client(settings.destination, settings.socket_timeout)
        try:
            effects = EventEffects(
                client,
                streams=settings.streams,
                prefix=settings.destination.prefix,
                purchase_events=settings.purchase_events,
                cluster=settings.destination.cluster_mode,
            )
            await effects.apply(effects.plan(accepted))
        finally:
            await client.aclose()

    asyncio.run(store())


def describe(result: Personalization) -> list[str]:
    """personalize()'s answer as the demo prints it: one line per product, its reasons below."""
    kind = "cold start (popular products)" if result.cold_start else "from recent purchases"
    lines = [f"  personalize({result.user_id!r}): {kind}"]
    for rank, item in enumerate(result.recommendations, 1):
        member = ", member-only" if item.member_only else ""
        lines.append(
            f"    {rank:2}. {item.sku} ({item.category}, price band {item.price_band}{member}) "
            f"score {item.score:.3f}"
        )
        lines += [f"          - {reason}" for reason in item.reasons]
    return lines


def print_recommendations(client: Any, users: Iterable[str], prefix: str, limit: int = 5) -> None:
    for user in users:
        print("\n".join(describe(personalize(client, user, limit=limit, prefix=prefix))))
