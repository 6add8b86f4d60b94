"""Sensors: start the profile path only when a source changed, or when its last run failed;
drain the event streams when enough events wait or some have waited long enough.

Each evaluation is cheap (a COUNT, a one-row query and getDeleted for the last day against
Salesforce; a stat and, only when
that moved, a hash of the enrichment file) and never opens the DuckDB warehouse, which belongs
to runs. A source that cannot be asked fails the tick with the reason, and the cursor stays put,
so the change is still seen on the next tick. The cursor advances when a run is requested; if
that run then fails, the next ticks request it again (up to MAX_ATTEMPTS runs in all).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import dagster as dg

from assets.activation import redis_user_profiles
from assets.events import raw_events
from assets.jobs import (
    RECOMMENDATION_MODEL,
    RECOMMENDATION_PATH,
    events_job,
    recommendations_job,
    warehouse_actions_job,
)
from assets.models import product_recommendations
from assets.sources import (
    CHANGE_MARKER,
    CONTENT_SHA256,
    income_enrichment,
    orders,
    products,
    salesforce_contacts,
)
from assets.warehouse import user_profiles
from personalization_pipeline.events.backlog import backlog
from personalization_pipeline.keys import event_stream_keys
from personalization_pipeline.resources.catalog import CatalogFilesResource
from personalization_pipeline.resources.enrichment import EnrichmentFileResource
from personalization_pipeline.resources.redis import RedisResource
from personalization_pipeline.resources.salesforce import ContactSource
from personalization_pipeline.settings import current
from personalization_pipeline.warehouse.income import file_sha256, missing_file_message

TRIGGER_TAG = "personalization/trigger"
RETRY_OF_TAG = "personalization/retry_of"
ATTEMPT_TAG = "personalization/attempt"
# A run that failed this often in a row needs a person (bad data, a broken mapping), not more runs.
MAX_ATTEMPTS = 3
# Set by Dagster on a failed run that the instance's run_retries will launch again.
WILL_RETRY_TAG = "dagster/will_retry"


def short_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rerun_if_last_failed(
    context: dg.SensorEvaluationContext, selection: Sequence[dg.AssetKey]
) -> dg.RunRequest | None:
    """Request again the run this sensor started last, if it failed, up to MAX_ATTEMPTS.

    A run the instance's run-retry daemon will retry is left to it. A run an operator
    cancelled is not requested again: cancelling is a decision.
    """
    runs = context.instance.get_runs(
        filters=dg.RunsFilter(tags={TRIGGER_TAG: context.sensor_name}), limit=1
    )
    if not runs or runs[0].status != dg.DagsterRunStatus.FAILURE:
        return None
    failed = runs[0]
    if failed.tags.get(WILL_RETRY_TAG) == "true":
        return None
    attempt = int(failed.tags.get(ATTEMPT_TAG, "1"))
    if attempt >= MAX_ATTEMPTS:
        context.log.warning(
            f"Run {failed.run_id} failed on attempt {attempt} of {MAX_ATTEMPTS}; not requesting "
            "it again. Fix the cause and launch warehouse_actions_job, or wait for the next change"
        )
        return None
    context.log.info(
        f"The last run this sensor started ({failed.run_id}) failed; requesting it again"
    )
    return dg.RunRequest(
        run_key=f"retry:{failed.run_id}",
        asset_selection=list(selection),
        tags={
            TRIGGER_TAG: context.sensor_name,
            RETRY_OF_TAG: failed.run_id,
            ATTEMPT_TAG: str(attempt + 1),
        },
    )


SOURCES = (salesforce_contacts.key, income_enrichment.key)


def profile_path_from(
    context: dg.SensorEvaluationContext, changed: dg.AssetKey
) -> list[dg.AssetKey]:
    """The changed source and everything after it, plus any source never loaded yet: on a first
    deploy user_profiles needs both, whichever sensor ticks first."""
    sources = [
        key
        for key in SOURCES
        if key == changed or context.instance.get_latest_materialization_event(key) is None
    ]
    return [*sources, user_profiles.key, redis_user_profiles.key]


@dg.sensor(
    job=warehouse_actions_job,
    minimum_interval_seconds=current().automation.sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Runs the profile path when any Salesforce Contact was added, edited or deleted "
        "(count, latest SystemModstamp and recent hard deletes; every SENSOR_INTERVAL_SECONDS). "
        "A failed run is requested again, up to 3 attempts."
    ),
)
def salesforce_contacts_sensor(
    context: dg.SensorEvaluationContext, salesforce: ContactSource
) -> dg.RunRequest | dg.SkipReason:
    """Runs the profile path when any Salesforce Contact was added, edited or deleted."""
    marker = salesforce.change_marker()
    selection = profile_path_from(context, salesforce_contacts.key)
    if marker != context.cursor and marker == recorded(context, salesforce_contacts, CHANGE_MARKER):
        context.update_cursor(marker)
        return dg.SkipReason(f"The latest materialization already landed this state: {marker}")
    if marker == context.cursor:
        return rerun_if_last_failed(context, selection) or dg.SkipReason(
            f"No Contact changed in {salesforce.describe()}: {marker}"
        )
    # The key names the transition, so a tick that is retried cannot start a second run.
    run_key = f"contacts:{short_digest(f'{context.cursor}->{marker}')}"
    context.update_cursor(marker)
    return dg.RunRequest(
        run_key=run_key,
        asset_selection=selection,
        tags={TRIGGER_TAG: context.sensor_name, "personalization/change": marker},
    )


def recorded(
    context: dg.SensorEvaluationContext, asset: dg.AssetsDefinition, name: str
) -> object | None:
    """What the latest materialization of `asset` recorded under `name`, if anything."""
    event = context.instance.get_latest_materialization_event(asset.key)
    materialization = event.asset_materialization if event else None
    value = materialization.metadata.get(name) if materialization else None
    return value.value if value is not None else None


def file_fingerprint(path: Path, previous: dict | None) -> dict:
    """Size, mtime and content hash; the file is only read when size or mtime moved."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(missing_file_message(path)) from None
    fingerprint = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if previous and all(previous.get(k) == v for k, v in fingerprint.items()):
        return previous
    return {**fingerprint, "sha256": file_sha256(path)}


@dg.sensor(
    job=warehouse_actions_job,
    minimum_interval_seconds=current().automation.sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Runs the profile path when the enrichment vendor drops a file with new content, once "
        "it has been still for INCOME_SETTLE_SECONDS. A failed run is requested again, up to 3 "
        "attempts."
    ),
)
def income_enrichment_sensor(
    context: dg.SensorEvaluationContext, income_file: EnrichmentFileResource
) -> dg.RunRequest | dg.SkipReason:
    """Runs the profile path when the enrichment vendor drops a file with new content."""
    path = Path(income_file.path)
    state = json.loads(context.cursor) if context.cursor else {}
    previous = {key: value for key, value in state.items() if key != FUTURE_DATED} or None
    fingerprint = file_fingerprint(path, previous)
    selection = profile_path_from(context, income_enrichment.key)
    if fingerprint == previous:
        return rerun_if_last_failed(context, selection) or dg.SkipReason(
            f"{path} unchanged (size {fingerprint['size']}, same mtime)"
        )
    now = time.time()
    age = now - fingerprint["mtime_ns"] / 1e9
    if age < 0:
        settle = (income_file.settle_seconds, "INCOME_SETTLE_SECONDS")
        waiting = wait_for_future_dated_file(
            context, state, FUTURE_DATED, fingerprint, now, str(path), settle
        )
        if waiting is not None:
            return waiting
    elif age < income_file.settle_seconds:
        return dg.SkipReason(
            f"{path} changed {age:.0f}s ago and may still be being written; waiting until it "
            f"has been still for {income_file.settle_seconds:.0f}s (INCOME_SETTLE_SECONDS)"
        )
    context.update_cursor(json.dumps(fingerprint, sort_keys=True))
    if previous and previous.get("sha256") == fingerprint["sha256"]:
        return dg.SkipReason(f"{path} was touched but its content is unchanged")
    if fingerprint["sha256"] == recorded(context, income_enrichment, CONTENT_SHA256):
        return dg.SkipReason(f"The latest materialization already loaded this content of {path}")
    return dg.RunRequest(
        run_key=f"income:{fingerprint['sha256'][:16]}:{fingerprint['mtime_ns']}",
        asset_selection=selection,
        tags={TRIGGER_TAG: context.sensor_name},
    )


# How often the backlog is looked at: one XINFO STREAM and XINFO GROUPS per stream.
EVENTS_SENSOR_TICK_SECONDS = 30
UNFINISHED_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@dg.sensor(
    job=events_job,
    minimum_interval_seconds=EVENTS_SENSOR_TICK_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Drains the gateway's event streams into raw.events when EVENTS_DRAIN_BACKLOG events "
        "wait, or every EVENTS_DRAIN_INTERVAL_SECONDS while any do; never two drains at once."
    ),
)
def events_sensor(
    context: dg.SensorEvaluationContext, redis: RedisResource
) -> dg.RunRequest | dg.SkipReason:
    """Drains the event streams when the backlog passes a threshold or every few minutes.

    The backlog comes from Redis alone (XINFO): the warehouse belongs to the runs. The cursor is
    when the last drain was requested; a run still queued or running is never joined by another,
    and after a failed drain the next one waits for the interval instead of the next tick.
    """
    unfinished = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=events_job.name, statuses=UNFINISHED_RUN_STATUSES), limit=1
    )
    if unfinished:
        return dg.SkipReason(
            f"Drain run {unfinished[0].run_id} is {unfinished[0].status.value}; waiting for it"
        )
    keys = event_stream_keys(current().events.stream_shards, redis.prefix)
    with closing(redis.get_client()) as client:
        waiting = backlog(client, keys)
    last_request = float(context.cursor) if context.cursor else None
    now = time.time()
    due = last_request is None or now - last_request >= current().automation.drain_interval_seconds
    latest = context.instance.get_runs(filters=dg.RunsFilter(job_name=events_job.name), limit=1)
    failed = bool(latest) and latest[0].status == dg.DagsterRunStatus.FAILURE
    if waiting == 0 or not (due or (waiting >= current().automation.drain_backlog and not failed)):
        return dg.SkipReason(
            f"{waiting} events waiting in {len(keys)} streams"
            + ("; the last drain failed, the next waits for the interval" if failed else "")
        )
    # The key names the previous request, so a tick that is retried cannot start a second run.
    run_key = f"events:{context.cursor or 'first'}"
    context.update_cursor(str(now))
    return dg.RunRequest(
        run_key=run_key,
        tags={TRIGGER_TAG: context.sensor_name, "personalization/backlog": str(waiting)},
    )


# Cursor entry for a file dated in the future: its size, mtime and when this host first saw it.
FUTURE_DATED = "future_dated"


def wait_for_future_dated_file(
    context: dg.SensorEvaluationContext,
    state: dict,
    entry: str,
    fingerprint: dict,
    now: float,
    path: str,
    settle: tuple[float, str],
) -> dg.SkipReason | None:
    """A file dated in the future was written by a host whose clock is ahead of this one, so
    its age says nothing. It counts as still once its size and mtime have not moved for the
    settle time (``settle``: seconds and the setting's name) on this host's clock, instead of
    waiting out the skew; the cursor's ``entry`` in ``state`` tracks it meanwhile."""
    settle_seconds, setting = settle
    ahead = fingerprint["mtime_ns"] / 1e9 - now
    seen = {key: fingerprint[key] for key in ("size", "mtime_ns")}
    pending = state.get(entry, {})
    if {key: pending.get(key) for key in seen} != seen:
        pending = {**seen, "first_seen": now}
        context.update_cursor(json.dumps({**state, entry: pending}, sort_keys=True))
    still = now - pending["first_seen"]
    skew = (
        f"{path} is dated {ahead:.0f}s in the future: the clock of the host that "
        "writes it is ahead of this one, so its age is unknown"
    )
    if still < settle_seconds:
        return dg.SkipReason(
            f"{skew}; waiting until its size and mtime have not moved for "
            f"{settle_seconds:.0f}s on this host's clock ({setting}), {still:.0f}s so far"
        )
    context.log.warning(f"{skew}; loading it, unchanged for {still:.0f}s. Fix the clock skew")
    return None


@dg.sensor(
    job=recommendations_job,
    minimum_interval_seconds=current().automation.sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Runs the recommendation path when the product catalog (PRODUCTS_PATH) or the order "
        "history (ORDERS_PATH) has new content, once both have been still for "
        "CATALOG_SETTLE_SECONDS. A failed run is requested again, up to 3 attempts."
    ),
)
def catalog_files_sensor(
    context: dg.SensorEvaluationContext, catalog_files: CatalogFilesResource
) -> dg.RunRequest | dg.SkipReason:
    """Runs the recommendation path when the catalog or the order history changed."""
    paths = {"products": catalog_files.products_path, "orders": catalog_files.orders_path}
    assets = {"products": products, "orders": orders}
    state = json.loads(context.cursor) if context.cursor else {}
    previous = {name: state[name] for name in paths if name in state}
    fingerprints = {
        name: file_fingerprint(Path(path), previous.get(name)) for name, path in paths.items()
    }
    if fingerprints == previous:
        return rerun_if_last_failed(context, RECOMMENDATION_PATH) or dg.SkipReason(
            f"{', '.join(paths.values())} unchanged"
        )
    now = time.time()
    settle = (catalog_files.settle_seconds, "CATALOG_SETTLE_SECONDS")
    for name, fingerprint in fingerprints.items():
        age = now - fingerprint["mtime_ns"] / 1e9
        if age < 0:
            entry = f"{FUTURE_DATED}:{name}"
            waiting = wait_for_future_dated_file(
                context, state, entry, fingerprint, now, paths[name], settle
            )
            if waiting is not None:
                return waiting
        elif age < catalog_files.settle_seconds:
            return dg.SkipReason(
                f"{paths[name]} changed {age:.0f}s ago and may still be being written; waiting "
                f"until it has been still for {catalog_files.settle_seconds:.0f}s "
                "(CATALOG_SETTLE_SECONDS)"
            )
    context.update_cursor(json.dumps(fingerprints, sort_keys=True))
    if all(previous.get(n, {}).get("sha256") == f["sha256"] for n, f in fingerprints.items()):
        return dg.SkipReason(f"{', '.join(paths.values())} touched but their content is unchanged")
    if all(
        f["sha256"] == recorded(context, assets[n], CONTENT_SHA256) for n, f in fingerprints.items()
    ):
        return dg.SkipReason(
            "The latest materializations already loaded this content of both files"
        )
    digest = short_digest(json.dumps([f["sha256"] for f in fingerprints.values()]))
    return dg.RunRequest(run_key=f"catalog:{digest}", tags={TRIGGER_TAG: context.sensor_name})


@dg.sensor(
    job=recommendations_job,
    minimum_interval_seconds=current().recommendations.refresh_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Rebuilds the recommendation model and its Redis lists after events_job landed new "
        "events, at most every MODEL_REFRESH_SECONDS (default one hour); the sources are not "
        "reloaded."
    ),
)
def recommendations_after_drain_sensor(
    context: dg.SensorEvaluationContext,
) -> dg.RunRequest | dg.SkipReason:
    """Rebuilds the model when raw.events changed since the last rebuild this sensor asked for.

    Not every drain: drains run every few minutes under load, and a model build over a large
    history takes seconds that the drains (which keep the streams from being trimmed) would
    wait for in the duckdb pool. Co-purchase statistics move slowly; recent purchases reach
    personalize() in real time through the gateway anyway.
    """
    records = context.instance.fetch_materializations(raw_events.key, limit=1).records
    if not records:
        return dg.SkipReason("raw_events was never materialized: no events drained yet")
    drained = str(records[0].storage_id)
    if context.cursor == drained:
        return dg.SkipReason("No events drained since the last model rebuild")
    context.update_cursor(drained)
    # A build that came after the drain (the demo's, one from the Launchpad) already has it.
    built = context.instance.fetch_materializations(product_recommendations.key, limit=1).records
    if built and built[0].storage_id > records[0].storage_id:
        return dg.SkipReason("The latest model build came after the latest drain")
    return dg.RunRequest(
        run_key=f"drained:{drained}",
        asset_selection=list(RECOMMENDATION_MODEL),
        tags={TRIGGER_TAG: context.sensor_name},
    )
