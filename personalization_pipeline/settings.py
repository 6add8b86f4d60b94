"""Resources built from environment variables, with defaults that run the demo.

Every variable is listed in .env.example and the README's configuration table.
"""

from __future__ import annotations

import os

import dagster as dg

from personalization_pipeline.resources.catalog import (
    DEFAULT_ORDERS_PATH,
    DEFAULT_PRODUCTS_PATH,
    DEFAULTS,
    CatalogFilesResource,
    ModelSettingsResource,
)
from personalization_pipeline.resources.enrichment import (
    DEFAULT_INCOME_ENRICHMENT_PATH,
    DEFAULT_SETTLE_SECONDS,
    EnrichmentFileResource,
)
from personalization_pipeline.resources.redis import DEFAULT_REDIS_URL, RedisResource
from personalization_pipeline.resources.rules import (
    DEFAULT_INCOME_BRACKET_PATTERN,
    DEFAULT_MAX_SHRINK_FRACTION,
    DEFAULT_MEMBERSHIP_STATUSES,
    DEFAULT_READBACK_SAMPLE_SIZE,
    ProfileRulesResource,
)
from personalization_pipeline.resources.salesforce import contact_source_from_env
from personalization_pipeline.resources.warehouse import DEFAULT_WAREHOUSE_PATH, WarehouseResource
from personalization_pipeline.sync.redis_config import DEFAULT_SOCKET_TIMEOUT


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def env_int(name: str, default: int) -> int:
    return int(env(name, str(default)))


DEFAULT_MODEL_REFRESH_SECONDS = 3600


def model_refresh_seconds() -> int:
    """MODEL_REFRESH_SECONDS: the model is rebuilt after a drain at most this often."""
    return env_int("MODEL_REFRESH_SECONDS", DEFAULT_MODEL_REFRESH_SECONDS)


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    return {
        "salesforce": contact_source_from_env(),
        "income_file": EnrichmentFileResource(
            path=env("INCOME_ENRICHMENT_PATH", DEFAULT_INCOME_ENRICHMENT_PATH),
            settle_seconds=float(env("INCOME_SETTLE_SECONDS", str(DEFAULT_SETTLE_SECONDS))),
        ),
        "catalog_files": CatalogFilesResource(
            products_path=env("PRODUCTS_PATH", DEFAULT_PRODUCTS_PATH),
            orders_path=env("ORDERS_PATH", DEFAULT_ORDERS_PATH),
            settle_seconds=float(env("CATALOG_SETTLE_SECONDS", str(DEFAULT_SETTLE_SECONDS))),
        ),
        "model": ModelSettingsResource(
            top_k=env_int("MODEL_TOP_K", DEFAULTS.top_k),
            min_co_buyers=env_int("MODEL_MIN_CO_BUYERS", DEFAULTS.min_co_buyers),
            max_items_per_order=env_int("MODEL_MAX_ITEMS_PER_ORDER", DEFAULTS.max_items_per_order),
            max_items_per_user=env_int("MODEL_MAX_ITEMS_PER_USER", DEFAULTS.max_items_per_user),
            popular_n=env_int("MODEL_POPULAR_N", DEFAULTS.popular_n),
            # The gateway reads the same variable (events/config.py): one list of purchase events.
            purchase_events=[
                name.strip()
                for name in env("EVENTS_PURCHASE_EVENTS", ",".join(DEFAULTS.purchase_events)).split(
                    ","
                )
                if name.strip()
            ],
        ),
        "warehouse": WarehouseResource(path=env("WAREHOUSE_PATH", DEFAULT_WAREHOUSE_PATH)),
        # The URL can carry a password, so it reaches the run only through EnvVar.
        "redis": RedisResource(
            url=dg.EnvVar("REDIS_URL") if os.environ.get("REDIS_URL") else DEFAULT_REDIS_URL,
            prefix=env("REDIS_KEY_PREFIX", ""),
            cluster_mode=env("REDIS_CLUSTER_MODE", "false").lower() in ("1", "true", "yes"),
            socket_timeout=float(env("REDIS_SOCKET_TIMEOUT", str(DEFAULT_SOCKET_TIMEOUT))),
            ca_cert_path=env("REDIS_CA_CERT_PATH", ""),
            client_cert_path=env("REDIS_CLIENT_CERT_PATH", ""),
            client_key_path=env("REDIS_CLIENT_KEY_PATH", ""),
        ),
        "rules": ProfileRulesResource(
            allowed_membership_statuses=env(
                "PROFILE_MEMBERSHIP_STATUSES", ",".join(DEFAULT_MEMBERSHIP_STATUSES)
            ).split(","),
            income_bracket_pattern=env(
                "PROFILE_INCOME_BRACKET_PATTERN", DEFAULT_INCOME_BRACKET_PATTERN
            ),
            max_shrink_fraction=float(env("PROFILE_MAX_SHRINK", str(DEFAULT_MAX_SHRINK_FRACTION))),
            readback_sample_size=int(
                env("REDIS_READBACK_SAMPLE", str(DEFAULT_READBACK_SAMPLE_SIZE))
            ),
        ),
    }
