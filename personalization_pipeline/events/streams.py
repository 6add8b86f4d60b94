"""The event streams between the gateway and the warehouse: how many, how long.

The gateway appends every accepted event (after rudder-server's defaults: ``messageId``,
``receivedAt`` and the resolved ``timestamp`` are always set, as strings) as JSON under the
entry field :data:`~personalization_pipeline.keys.EVENT_FIELD` of the stream
:func:`~personalization_pipeline.keys.event_stream_key` picks for its user. The warehouse
drains them with the consumer group
:data:`~personalization_pipeline.keys.EVENTS_CONSUMER_GROUP`.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_SHARDS = 4
# Per stream, trimmed approximately (XADD MAXLEN ~). Far above what the drain leaves behind
# between two runs; an entry trimmed before it landed is reported by the drain, never hidden.
DEFAULT_MAX_LENGTH = 1_000_000


@dataclass(frozen=True)
class EventStreams:
    shards: int = DEFAULT_SHARDS
    max_length: int = DEFAULT_MAX_LENGTH

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ValueError(f"EVENTS_STREAM_SHARDS must be at least 1, got {self.shards}")
        if self.max_length < 1000:
            raise ValueError(
                f"EVENTS_STREAM_MAX_LENGTH must be at least 1000, got {self.max_length}"
            )
