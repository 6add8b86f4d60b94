"""Every setting the pipeline reads from the environment, typed, in one object built once.

`Settings.from_env()` reads each block's variables (named in the fields' `setting(...)`), parses
them by the field's type (env_values.py: whole numbers, numbers, true/false, comma-separated
lists) and refuses a malformed value naming the variable and what it expected, never repeating
the value (it may be a secret). An unset or empty variable keeps the default. Resources,
sensors, schedules, the gateway and the CLI read this object, never the environment.
Salesforce's SALESFORCE_* settings are the Salesforce resource's fields, parsed by the same
parser (resources/salesforce.py).

Every variable is listed in .env.example and the README's configuration table; `personalization
settings` prints the values in effect (secrets masked).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from personalization_pipeline.env_values import EnvValueError, parse_env_value
from personalization_pipeline.events.connection import (
    DEFAULT_SOCKET_TIMEOUT as GATEWAY_SOCKET_TIMEOUT,
)
from personalization_pipeline.events.streams import DEFAULT_MAX_LENGTH, DEFAULT_SHARDS, EventStreams
from personalization_pipeline.sync.redis_config import DEFAULT_SOCKET_TIMEOUT

__all__ = ["Settings", "SettingsError", "current", "setting"]

MINIMUM_SENSOR_INTERVAL_SECONDS = 60


class SettingsError(EnvValueError):
    """A variable that cannot be used; the message names it and says what it should hold."""


def setting(variable: str, default: Any, *, secret: bool = False) -> Any:
    """A field read from `variable`; `secret` values are never shown in messages or listings."""
    return field(default=default, metadata={"variable": variable, "secret": secret})


@dataclass(frozen=True)
class RedisSettings:
    url: str = setting("REDIS_URL", "redis://127.0.0.1:6379/0", secret=True)
    prefix: str = setting("REDIS_KEY_PREFIX", "")
    cluster_mode: bool = setting("REDIS_CLUSTER_MODE", False)
    socket_timeout: float = setting("REDIS_SOCKET_TIMEOUT", DEFAULT_SOCKET_TIMEOUT)
    ca_cert_path: str = setting("REDIS_CA_CERT_PATH", "")
    client_cert_path: str = setting("REDIS_CLIENT_CERT_PATH", "")
    client_key_path: str = setting("REDIS_CLIENT_KEY_PATH", "")
    readback_sample: int = setting("REDIS_READBACK_SAMPLE", 100)

    @property
    def url_is_set(self) -> bool:
        """REDIS_URL came from the environment (it then reaches runs only as an EnvVar)."""
        return self.url != RedisSettings.url


@dataclass(frozen=True)
class WarehouseSettings:
    path: str = setting("WAREHOUSE_PATH", "data/warehouse.duckdb")
    sync_memory_limit: str = setting("SYNC_MEMORY_LIMIT", "1GB")
    """DuckDB's memory limit while a sync runs; past it the sync spills to disk."""


@dataclass(frozen=True)
class IncomeSettings:
    path: str = setting("INCOME_ENRICHMENT_PATH", "data/sample/income_enrichment.csv")
    settle_seconds: float = setting("INCOME_SETTLE_SECONDS", 60.0)
    """A file is loaded once its size and mtime stayed put this long."""


@dataclass(frozen=True)
class ProfileRules:
    membership_statuses: tuple[str, ...] = setting(
        "PROFILE_MEMBERSHIP_STATUSES", ("loyalty_member", "expired", "trial", "prospect")
    )
    income_bracket_pattern: str = setting("PROFILE_INCOME_BRACKET_PATTERN", r"^level_[1-5]$")
    max_shrink: float = setting("PROFILE_MAX_SHRINK", 0.2)
    """user_profiles may lose at most this share of its rows since the last good build."""


@dataclass(frozen=True)
class RecommendationSettings:
    """The catalog and order drops, and the recommendation model's knobs
    (warehouse/recommendations.py ModelSettings)."""

    products_path: str = setting("PRODUCTS_PATH", "data/sample/products.csv")
    orders_path: str = setting("ORDERS_PATH", "data/sample/orders.csv")
    settle_seconds: float = setting("CATALOG_SETTLE_SECONDS", 60.0)
    """catalog_files_sensor waits until both files stayed put this long."""
    top_k: int = setting("MODEL_TOP_K", 20)
    min_co_buyers: int = setting("MODEL_MIN_CO_BUYERS", 2)
    max_items_per_order: int = setting("MODEL_MAX_ITEMS_PER_ORDER", 50)
    max_items_per_user: int = setting("MODEL_MAX_ITEMS_PER_USER", 100)
    popular_n: int = setting("MODEL_POPULAR_N", 100)
    refresh_seconds: int = setting("MODEL_REFRESH_SECONDS", 3600)
    """The model is rebuilt after a drain that landed events at most this often."""


@dataclass(frozen=True)
class AutomationSettings:
    sensor_interval_seconds: int = setting("SENSOR_INTERVAL_SECONDS", 30 * 60)
    redis_verify_cron: str = setting("REDIS_VERIFY_CRON", "*/30 * * * *")
    reconcile_cron: str = setting("RECONCILE_CRON", "0 3 * * *")
    drain_backlog: int = setting("EVENTS_DRAIN_BACKLOG", 10_000)
    """This many waiting events start a drain at once."""
    drain_interval_seconds: int = setting("EVENTS_DRAIN_INTERVAL_SECONDS", 300)
    """A drain at least this often while any event waits."""

    def __post_init__(self) -> None:
        if self.sensor_interval_seconds < MINIMUM_SENSOR_INTERVAL_SECONDS:
            raise SettingsError(
                f"SENSOR_INTERVAL_SECONDS={self.sensor_interval_seconds} is below the "
                f"{MINIMUM_SENSOR_INTERVAL_SECONDS}-second minimum; set it to 60 or more"
            )


@dataclass(frozen=True)
class EventSettings:
    write_keys: tuple[str, ...] = setting("EVENTS_WRITE_KEYS", (), secret=True)
    read_keys: tuple[str, ...] = setting("PERSONALIZE_READ_KEYS", (), secret=True)
    purchase_events: tuple[str, ...] = setting("EVENTS_PURCHASE_EVENTS", ("Order Completed",))
    stream_shards: int = setting("EVENTS_STREAM_SHARDS", DEFAULT_SHARDS)
    stream_max_length: int = setting("EVENTS_STREAM_MAX_LENGTH", DEFAULT_MAX_LENGTH)
    socket_timeout: float = setting("EVENTS_SOCKET_TIMEOUT", GATEWAY_SOCKET_TIMEOUT)
    drain_batch_size: int = setting("EVENTS_DRAIN_BATCH_SIZE", 1000)
    """Entries read per stream per batch; one DuckDB transaction per batch."""
    drain_max_events: int = setting("EVENTS_DRAIN_MAX_EVENTS", 200_000)
    drain_max_seconds: float = setting("EVENTS_DRAIN_MAX_SECONDS", 120.0)
    """One drain run stops after this many entries or seconds, so constant load cannot pin it."""

    def streams(self) -> EventStreams:
        return EventStreams(self.stream_shards, self.stream_max_length)


@dataclass(frozen=True)
class Settings:
    """The whole configuration; see the README's configuration table."""

    redis: RedisSettings = field(default_factory=RedisSettings)
    warehouse: WarehouseSettings = field(default_factory=WarehouseSettings)
    income: IncomeSettings = field(default_factory=IncomeSettings)
    rules: ProfileRules = field(default_factory=ProfileRules)
    automation: AutomationSettings = field(default_factory=AutomationSettings)
    events: EventSettings = field(default_factory=EventSettings)
    recommendations: RecommendationSettings = field(default_factory=RecommendationSettings)
    preview_personal_data: bool = setting("PREVIEW_PERSONAL_DATA", False)
    """Show emails and names unmasked in Dagster metadata (development on sample data only)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        return read_block(cls, os.environ if environ is None else environ)

    def listing(self) -> list[tuple[str, str]]:
        """(variable, value in effect) for every setting, secrets masked."""
        return list(variables(self))


@functools.cache
def current() -> Settings:
    """The settings of this process, read from the environment on first use. (Tests that set a
    variable call ``current.cache_clear()``.)"""
    return Settings.from_env()


def read_block(block: type, environ: Mapping[str, str]) -> Any:
    hints = typing.get_type_hints(block)
    values: dict[str, Any] = {}
    for item in dataclasses.fields(block):
        kind = hints[item.name]
        if dataclasses.is_dataclass(kind):
            values[item.name] = read_block(kind, environ)
            continue
        variable = item.metadata["variable"]
        text = (environ.get(variable) or "").strip()
        if text:
            values[item.name] = parse_env_value(variable, text, kind)
    return block(**values)


def variables(block: Any) -> typing.Iterator[tuple[str, str]]:
    for item in dataclasses.fields(block):
        value = getattr(block, item.name)
        if dataclasses.is_dataclass(value):
            yield from variables(value)
        elif item.metadata["secret"]:
            yield item.metadata["variable"], "(set, hidden)" if value else "(unset)"
        else:
            shown = ",".join(value) if isinstance(value, tuple) else str(value)
            yield item.metadata["variable"], shown
