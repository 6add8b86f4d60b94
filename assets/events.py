"""Events: land what the gateway accepted (the Redis event streams) in the warehouse."""

from contextlib import closing

import dagster as dg

from assets import OWNERS, layer
from personalization_pipeline.metadata import column_schema, table_metadata
from personalization_pipeline.resources.redis import RedisResource
from personalization_pipeline.resources.warehouse import WarehouseResource
from personalization_pipeline.settings import current
from personalization_pipeline.warehouse.events import DrainSettings, drain_events
from personalization_pipeline.warehouse.tables import EVENTS


@dg.asset(
    group_name="sources",
    kinds={"redis", "duckdb"},
    owners=OWNERS,
    tags=layer("source", personal_data=True),
    pool="duckdb",
    metadata=column_schema(EVENTS),
)
def raw_events(
    context: dg.AssetExecutionContext, redis: RedisResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Every event the gateway accepted, once, in raw.events; identify emails in identities."""
    # The warehouse is opened before the streams are read: holding DuckDB's lock is what makes
    # this the only drain running, which the claim of every pending entry relies on.
    events = current().events
    with closing(redis.get_client()) as client, warehouse.connect() as connection:
        result = drain_events(
            client,
            connection,
            events.streams(),
            DrainSettings(
                events.drain_batch_size, events.drain_max_events, events.drain_max_seconds
            ),
            prefix=redis.prefix,
            log=context.log.info,
        )
        metadata = table_metadata(connection, "raw.events")
    if result.trimmed:
        context.log.error(
            f"{result.trimmed} events were trimmed from the streams before they landed and are "
            "lost (see raw.events_trimmed). Drain more often (EVENTS_DRAIN_BACKLOG, "
            "EVENTS_DRAIN_INTERVAL_SECONDS) or raise EVENTS_STREAM_MAX_LENGTH"
        )
    if result.rejected:
        context.log.warning(
            f"{result.rejected} stream entries were not usable events; kept with the reason in "
            "raw.events_rejected"
        )
    context.log.info(
        f"Read {result.read} entries in {result.seconds:.1f}s: {result.landed} landed, "
        f"{result.duplicates} duplicates skipped, {result.rejected} rejected, {result.claimed} "
        f"claimed from a dead drain; {result.backlog} still waiting"
    )
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "entries_read": result.read,
            "events_landed": result.landed,
            "duplicates_skipped": result.duplicates,
            "entries_rejected": result.rejected,
            "claimed_from_dead_drains": result.claimed,
            "trimmed_before_landing": result.trimmed,
            "backlog_left": result.backlog,
            "seconds": round(result.seconds, 3),
        }
    )
