"""Every Redis key name the project writes or reads, defined once.

The profile hash key is RudderStack's (``[prefix:]user:<userId>``, built by the identify
encoding). The keys the real-time path adds sit beside it:

- ``{[prefix:]user:<userId>}:purchases``: a user's purchase log. The braces make it a Redis
  Cluster hash tag equal to the profile key, so both live in one slot and one script can
  update them atomically.
- ``[prefix:]events:<shard>``: the event streams the gateway appends every accepted event to
  and the warehouse drains. Events are spread over ``shards`` streams by user so that one key
  is not a hotspot and one user's events stay in order in one stream.
- ``[prefix:]_sync:<sync name>:epoch``: the marker a warehouse sync keeps in Redis to notice
  that Redis lost its data (see ``sync/state.py``).

The recommendation model's keys (warehouse tables in ``assets/sql/``, read by
``serving/personalize.py``):

- ``[prefix:]similar:<sku>``: sorted set, the SKU's nearest neighbours
  (analytics.product_similarity), scored by similarity.
- ``[prefix:]popular`` and ``[prefix:]popular:<category>``: sorted sets, the most bought
  products overall (analytics.popular_products) and per category
  (analytics.popular_products_by_category), scored by distinct buyers.
- ``[prefix:]product:<sku>``: hash, the catalog row (analytics.product_catalog: name,
  category, price, member_only, price_band) for anyone who shows a product.

A member of the sorted sets is not a bare SKU but :func:`product_member`, the compact JSON
``["<sku>","<category>",<price band>,<member_only>]``: the read path's rules need those three
attributes of every candidate, and a candidate is known only once its sorted set is read, so
carrying them in the member is what lets personalize() answer in two round trips instead of
three. A catalog change therefore changes the members of every list holding the product;
such a list is replaced whole.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

import orjson

from personalization_pipeline.sync.identify import key_prefix, template_key, user_key

__all__ = [
    "EVENTS_CONSUMER_GROUP",
    "EVENT_FIELD",
    "PRODUCT_KEY_TEMPLATE",
    "ProductMember",
    "event_stream_key",
    "event_stream_keys",
    "popular_key",
    "product_key",
    "product_member",
    "purchases_key",
    "similar_key",
    "stream_shard",
    "sync_epoch_key",
    "user_key",
]

# Consumer group the warehouse drain reads the event streams with.
EVENTS_CONSUMER_GROUP = "warehouse"
# Each stream entry has one field: the accepted event as JSON (messageId, receivedAt set).
EVENT_FIELD = "e"


def purchases_key(profile_key: str) -> str:
    """The purchase log of the user whose profile hash is ``profile_key``, in its slot.

    Redis hashes the text between the first ``{`` and the first ``}`` after it, when that is
    not empty, else the whole key. A profile key with such a tag (``user:a{b}c``) keeps it by
    suffixing; otherwise the whole profile key becomes the tag. A key without a tag that holds
    a ``}`` (``user:{}x``) cannot be named into its slot at all, so it gets the plain suffix:
    fine outside Redis Cluster, refused by the cluster's cross-slot check inside one.
    """
    opening = profile_key.find("{")
    if opening != -1 and profile_key.find("}", opening + 1) > opening + 1:
        return profile_key + ":purchases"
    if "}" in profile_key:
        return profile_key + ":purchases"
    return "{" + profile_key + "}:purchases"


def stream_shard(identity: str, shards: int) -> int:
    """Which stream an event goes to: by userId (else anonymousId), stable across processes."""
    return zlib.crc32(identity.encode("utf-8", "surrogatepass")) % shards


def event_stream_key(shard: int, prefix: str = "") -> str:
    return f"{key_prefix(prefix)}events:{shard}"


def event_stream_keys(shards: int, prefix: str = "") -> list[str]:
    return [event_stream_key(shard, prefix) for shard in range(shards)]


def sync_epoch_key(sync_name: str, prefix: str = "") -> str:
    return f"{key_prefix(prefix)}_sync:{sync_name}:epoch"


def similar_key(sku: str, prefix: str = "") -> str:
    return f"{key_prefix(prefix)}similar:{sku}"


def popular_key(category: str | None = None, prefix: str = "") -> str:
    """The popular list of ``category``, or of the whole catalog when None."""
    return f"{key_prefix(prefix)}popular" + ("" if category is None else f":{category}")


# The product hashes are synced by a SyncSpec, whose SQL builds keys from this template.
PRODUCT_KEY_TEMPLATE = "product:{key}"


def product_key(sku: str, prefix: str = "") -> str:
    return template_key(PRODUCT_KEY_TEMPLATE, sku, prefix)


class ProductMember(NamedTuple):
    """A member of the similar / popular sorted sets, decoded."""

    sku: str
    category: str
    price_band: int
    member_only: bool

    @classmethod
    def parse(cls, member: str | bytes) -> ProductMember:
        return cls(*orjson.loads(member))


def product_member(sku: str, category: str, price_band: int, member_only: bool) -> str:
    return orjson.dumps([sku, category, price_band, member_only]).decode()
