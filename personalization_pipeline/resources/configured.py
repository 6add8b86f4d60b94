"""The resources every run uses, configured from the settings object."""

from __future__ import annotations

import dagster as dg

from personalization_pipeline.resources.catalog import CatalogFilesResource, ModelSettingsResource
from personalization_pipeline.resources.enrichment import EnrichmentFileResource
from personalization_pipeline.resources.redis import RedisResource
from personalization_pipeline.resources.rules import ProfileRulesResource
from personalization_pipeline.resources.salesforce import contact_source_from_env
from personalization_pipeline.resources.warehouse import WarehouseResource
from personalization_pipeline.settings import Settings


def resources_from_settings(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    redis = settings.redis
    recommendations = settings.recommendations
    return {
        "salesforce": contact_source_from_env(),
        "income_file": EnrichmentFileResource(
            path=settings.income.path, settle_seconds=settings.income.settle_seconds
        ),
        "catalog_files": CatalogFilesResource(
            products_path=recommendations.products_path,
            orders_path=recommendations.orders_path,
            settle_seconds=recommendations.settle_seconds,
        ),
        "model": ModelSettingsResource(
            top_k=recommendations.top_k,
            min_co_buyers=recommendations.min_co_buyers,
            max_items_per_order=recommendations.max_items_per_order,
            max_items_per_user=recommendations.max_items_per_user,
            popular_n=recommendations.popular_n,
            # The gateway's list: what it logs as purchases is what the model learns from.
            purchase_events=list(settings.events.purchase_events),
        ),
        "warehouse": WarehouseResource(path=settings.warehouse.path),
        # The URL can carry a password, so it reaches the run only through EnvVar.
        "redis": RedisResource(
            url=dg.EnvVar("REDIS_URL") if redis.url_is_set else redis.url,
            prefix=redis.prefix,
            cluster_mode=redis.cluster_mode,
            socket_timeout=redis.socket_timeout,
            ca_cert_path=redis.ca_cert_path,
            client_cert_path=redis.client_cert_path,
            client_key_path=redis.client_key_path,
        ),
        "rules": ProfileRulesResource(
            allowed_membership_statuses=list(settings.rules.membership_statuses),
            income_bracket_pattern=settings.rules.income_bracket_pattern,
            max_shrink_fraction=settings.rules.max_shrink,
            readback_sample_size=redis.readback_sample,
        ),
    }
