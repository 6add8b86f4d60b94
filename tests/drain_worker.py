"""A drain in its own process, for tests to kill -9 at a chosen point.

    python -m tests.drain_worker REDIS_URL WAREHOUSE BATCH_SIZE CRASH_POINT

CRASH_POINT: ``after-read`` (entries delivered, nothing landed), ``before-ack`` (batch
committed in DuckDB, not acknowledged), ``after-ack`` (one batch acknowledged) or ``none``.
At the point it prints ``crash-point`` and waits for the kill; each landed batch prints a
``progress`` line.
"""

from __future__ import annotations

import sys
import time

import duckdb
import redis
from redis.client import Pipeline

from personalization_pipeline.events.streams import EventStreams
from personalization_pipeline.warehouse.events import DrainSettings, drain_events


def say(line: str) -> None:
    print(line, flush=True)


def hold(marker: str) -> None:
    say(marker)
    while True:
        time.sleep(60)


class CrashingPipeline(Pipeline):
    """Stops the process for the kill at the crash point: the real commands run up to it."""

    crash_point = "none"

    def execute(self, raise_on_error: bool = True) -> list:
        commands = {args[0] for args, _ in self.command_stack}
        if self.crash_point == "before-ack" and "XACK" in commands:
            hold("crash-point")
        replies = super().execute(raise_on_error)
        if self.crash_point == "after-read" and "XREADGROUP" in commands and any(replies):
            hold("crash-point")
        if self.crash_point == "after-ack" and "XACK" in commands:
            hold("crash-point")
        return replies


class CrashingRedis(redis.Redis):
    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return CrashingPipeline(self.connection_pool, self.response_callbacks, transaction, None)


def main(redis_url: str, warehouse: str, batch_size: str, crash_point: str) -> None:
    CrashingPipeline.crash_point = crash_point
    client = CrashingRedis.from_url(redis_url)
    connection = duckdb.connect(warehouse)
    drain_events(
        client,
        connection,
        EventStreams(),
        DrainSettings(batch_size=int(batch_size)),
        log=lambda message: say(f"progress {message}"),
    )
    say("done")


if __name__ == "__main__":
    main(*sys.argv[1:])
