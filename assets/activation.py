"""Activation: project warehouse models into the Redis keyspace the product reads."""

import time
from typing import Literal

import dagster as dg

from assets.warehouse import user_profiles
from personalization_pipeline.metadata import PREVIEW_ROWS, markdown_table
from personalization_pipeline.resources.redis import RedisResource
from personalization_pipeline.resources.warehouse import WarehouseResource
from personalization_pipeline.sync.identify import user_key
from personalization_pipeline.sync.profiles import write_identify_rows

PROFILE_TRAITS = ["email", "membership_status", "income_bracket"]


class RedisSyncConfig(dg.Config):
    mode: Literal["upsert", "full"] = "upsert"


@dg.asset(group_name="activation", kinds={"duckdb", "redis"}, pool="duckdb", deps=[user_profiles])
def redis_user_profiles(
    context: dg.AssetExecutionContext,
    config: RedisSyncConfig,
    warehouse: WarehouseResource,
    redis: RedisResource,
) -> dg.MaterializeResult:
    """Profiles in Redis as user:<userId> hashes, as RudderStack's Redis destination writes them."""
    client = redis.get_client()
    started = time.perf_counter()
    with warehouse.connect() as connection:
        relation = connection.sql(
            f"SELECT user_id, {', '.join(PROFILE_TRAITS)} FROM analytics.user_profiles "
            "ORDER BY user_id"
        )
        rows = relation.fetchall()
    result = write_identify_rows(client, rows, relation.columns, "user_id", redis.key_prefix)
    seconds = time.perf_counter() - started
    context.log.info(
        f"Wrote {result.written} profile hashes in {seconds:.2f}s; rejected {result.rejected}"
    )
    # Read back what Redis now holds, so the preview shows the stored bytes, not our intent.
    preview_keys = [user_key(row[0], redis.key_prefix) for row in rows[:PREVIEW_ROWS]]
    preview = [(key, _decoded(client.hgetall(key))) for key in preview_keys]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": result.written,
            "rows_written": result.written,
            "rows_rejected": sum(result.rejected.values()),
            "rejected_by_reason": result.rejected,
            "seconds": round(seconds, 3),
            "mode": config.mode,
            "preview": dg.MetadataValue.md(markdown_table(["key", "fields"], preview)),
        }
    )


def _decoded(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {name.decode(): value.decode() for name, value in sorted(fields.items())}
