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
"""

from __future__ import annotations

import zlib

from personalization_pipeline.sync.identify import key_prefix, user_key

__all__ = [
    "EVENTS_CONSUMER_GROUP",
    "EVENT_FIELD",
    "event_stream_key",
    "event_stream_keys",
    "purchases_key",
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
