"""The gateway's settings, read from the environment once at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from personalization_pipeline.events.connection import DEFAULT_SOCKET_TIMEOUT
from personalization_pipeline.events.streams import EventStreams
from personalization_pipeline.settings import Settings
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
    def from_settings(cls, settings: Settings) -> GatewaySettings:
        """The gateway's part of the settings: the event block and the Redis destination."""
        redis, events = settings.redis, settings.events
        destination = replace(
            RedisDestination.from_url(redis.url),
            prefix=redis.prefix,
            cluster_mode=redis.cluster_mode,
            ca_cert_path=redis.ca_cert_path or None,
            client_cert_path=redis.client_cert_path or None,
            client_key_path=redis.client_key_path or None,
        )
        return cls(
            write_keys=events.write_keys,
            read_keys=events.read_keys,
            destination=destination,
            streams=events.streams(),
            purchase_events=events.purchase_events,
            socket_timeout=events.socket_timeout,
        )
