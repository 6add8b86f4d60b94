"""The catalog and historical-order drops, and the recommendation model's knobs."""

from __future__ import annotations

import dagster as dg

from personalization_pipeline.warehouse.recommendations import ModelSettings

DEFAULTS = ModelSettings()


class CatalogFilesResource(dg.ConfigurableResource):
    """Paths of the latest product catalog and order history; each drop is a full file."""

    products_path: str = "data/sample/products.csv"
    orders_path: str = "data/sample/orders.csv"
    # A file modified more recently than this may still be being written: wait for the next tick.
    settle_seconds: float = 60.0


class ModelSettingsResource(dg.ConfigurableResource):
    """The recommendation model's knobs (warehouse/recommendations.py ModelSettings)."""

    top_k: int = DEFAULTS.top_k
    min_co_buyers: int = DEFAULTS.min_co_buyers
    max_items_per_order: int = DEFAULTS.max_items_per_order
    max_items_per_user: int = DEFAULTS.max_items_per_user
    popular_n: int = DEFAULTS.popular_n
    # The track events that are purchases: the gateway's EVENTS_PURCHASE_EVENTS.
    purchase_events: list[str] = list(DEFAULTS.purchase_events)  # noqa: RUF012

    def model_settings(self) -> ModelSettings:
        return ModelSettings(
            top_k=self.top_k,
            min_co_buyers=self.min_co_buyers,
            max_items_per_order=self.max_items_per_order,
            max_items_per_user=self.max_items_per_user,
            popular_n=self.popular_n,
            purchase_events=tuple(self.purchase_events),
        )
