"""The gateway's settings, read from the environment once at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from personalization_pipeline.events.connection import DEFAULT_SOCKET_TIMEOUT
from personalization_pipeline.events.streams import EventStreams
from personalization_pipeline.sync.redis_config import RedisDestination

__all__ = ["DEMO_WRITE_KEY", "MAX_BODY_BYTES", "GatewaySettings", "NoWriteKeys"]

# What `make serve`, .env.example and the README use; never a default in code, so a gateway
# started without EVENTS_WRITE_KEYS refuses instead of accepting a published key.
DEMO_WRITE_KEY = "demo-write-key"
# rudder-server's Gateway.maxReqSizeInKB (4000) x 1024, measured after decompression.
MAX_BODY_BYTES = 4_096_000


class NoWriteKeys(ValueError):
    """The gateway would accept no write key."""


@dataclass(frozen=True)
class GatewaySettings:
    write_keys: tuple[str, ...]
    # Keys GET /v1/personalize accepts; none: every read is refused (401).
    read_keys: tuple[str, ...] = ()
    destination: RedisDestination = field(default_factory=RedisDestination)
    streams: EventStreams = field(default_factory=EventStreams)
    purchase_events: tuple[str, ...] = ("Order Completed",)
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT
    max_body_bytes: int = MAX_BODY_BYTES

    def __post_init__(self) -> None:
        if not self.write_keys:
            raise NoWriteKeys(
                "EVENTS_WRITE_KEYS is empty, so the gateway would refuse every request: set it "
                "to the write keys your SDKs use, comma-separated (the demo's is "
                f"EVENTS_WRITE_KEYS={DEMO_WRITE_KEY}, which `make serve` sets)"
            )

    @classmethod
    def from_env(cls) -> GatewaySettings:
        """EVENTS_WRITE_KEYS, PERSONALIZE_READ_KEYS, EVENTS_PURCHASE_EVENTS, the streams' and
        Redis's variables."""
        url = os.environ.get("REDIS_URL")
        destination = RedisDestination.from_url(url) if url else RedisDestination()
        destination = replace(
            destination,
            prefix=os.environ.get("REDIS_KEY_PREFIX", ""),
            cluster_mode=os.environ.get("REDIS_CLUSTER_MODE", "false").lower()
            in ("1", "true", "yes"),
        )
        purchases = _names(os.environ.get("EVENTS_PURCHASE_EVENTS") or "Order Completed")
        return cls(
            write_keys=_names(os.environ.get("EVENTS_WRITE_KEYS", "")),
            read_keys=_names(os.environ.get("PERSONALIZE_READ_KEYS", "")),
            destination=destination,
            streams=EventStreams.from_env(),
            purchase_events=purchases,
        )


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())
