"""What the warehouse drain has yet to read from the event streams, and what it never will.

Redis only, so the events sensor can ask it without opening the warehouse. Relies on Redis 7's
per-group counters (XINFO GROUPS ``entries-read`` and ``lag``); on older Redis, or once entries
were XDEL'ed, the counters are unknown and backlog falls back to the stream length while trim
detection is skipped for that stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis
from redis.cluster import RedisCluster

from personalization_pipeline.keys import EVENTS_CONSUMER_GROUP

RedisClient = redis.Redis | RedisCluster


def ensure_group(client: RedisClient, stream: str) -> None:
    """Create the drain's consumer group at the very first entry (MKSTREAM) if it is missing."""
    try:
        client.xgroup_create(stream, EVENTS_CONSUMER_GROUP, id="0", mkstream=True)
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


@dataclass(frozen=True)
class GroupPosition:
    """One stream as the drain's consumer group sees it (XINFO STREAM + XINFO GROUPS)."""

    stream: str
    length: int
    entries_added: int
    first_entry_id: str | None
    last_generated_id: str
    last_delivered_id: str
    entries_read: int | None
    lag: int | None
    pending: int

    @property
    def backlog(self) -> int:
        """Entries not landed yet: never delivered, plus delivered but not acknowledged."""
        undelivered = self.lag if self.lag is not None else self.length
        return undelivered + self.pending

    @property
    def read_count(self) -> int | None:
        """Entries the group has read; Redis forgets it for a group created at 0 on a stream
        that was trimmed already, where it can only be 0."""
        if self.entries_read is None and _id(self.last_delivered_id) == (0, 0):
            return 0
        return self.entries_read

    def unread_trimmed(self) -> int:
        """Entries removed from the stream (MAXLEN) before the group ever read them.

        Every entry the group read counts once in ``entries-read``, and trimming removes the
        oldest entries first. So when nothing left in the stream was read yet (the group stands
        before the first entry) or everything in it was (the group is at the end), the removed
        entries the group did not read are the difference. In between the count would need a
        scan; the check at the next batch or run catches it.
        """
        read = self.read_count
        if read is None:
            return 0
        removed = self.entries_added - self.length
        if self.length == 0 or _id(self.last_delivered_id) < _id(self.first_entry_id or "0-0"):
            return max(0, removed - read)
        if _id(self.last_delivered_id) >= _id(self.last_generated_id):
            return max(0, self.entries_added - read)
        return 0


def group_positions(client: RedisClient, streams: Sequence[str]) -> list[GroupPosition]:
    """Where the drain's group stands on each stream; a stream or group not made yet is empty."""
    positions = []
    for stream in streams:
        try:
            info = client.xinfo_stream(stream)
            groups = client.xinfo_groups(stream)
        except redis.ResponseError as error:
            if "no such key" not in str(error).lower():
                raise
            info, groups = {}, []
        group = next((g for g in groups if as_text(g["name"]) == EVENTS_CONSUMER_GROUP), None)
        first = info.get("first-entry")
        positions.append(
            GroupPosition(
                stream=stream,
                length=info.get("length", 0),
                entries_added=info.get("entries-added", info.get("length", 0)),
                first_entry_id=as_text(first[0]) if first else None,
                last_generated_id=as_text(info.get("last-generated-id", "0-0")),
                last_delivered_id=as_text(group["last-delivered-id"]) if group else "0-0",
                entries_read=group.get("entries-read") if group else 0,
                lag=group.get("lag") if group else info.get("length", 0),
                pending=group["pending"] if group else 0,
            )
        )
    return positions


def backlog(client: RedisClient, streams: Sequence[str]) -> int:
    """Events accepted by the gateway and not yet landed in the warehouse, over all streams."""
    return sum(position.backlog for position in group_positions(client, streams))


def as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)
