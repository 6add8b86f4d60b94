"""Sensors: start the profile path only when a source changed, or when its last run failed.

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
import os
import time
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from assets.activation import redis_user_profiles
from assets.sources import income_enrichment, salesforce_contacts
from assets.warehouse import user_profiles
from personalization_pipeline.jobs import warehouse_actions_job
from personalization_pipeline.resources.enrichment import EnrichmentFileResource
from personalization_pipeline.resources.salesforce import ContactSource
from personalization_pipeline.warehouse.income import missing_file_message

DEFAULT_INTERVAL_SECONDS = 30 * 60
MINIMUM_INTERVAL_SECONDS = 60
TRIGGER_TAG = "personalization/trigger"
RETRY_OF_TAG = "personalization/retry_of"
ATTEMPT_TAG = "personalization/attempt"
# A run that failed this often in a row needs a person (bad data, a broken mapping), not more runs.
MAX_ATTEMPTS = 3
# Set by Dagster on a failed run that the instance's run_retries will launch again.
WILL_RETRY_TAG = "dagster/will_retry"


def sensor_interval_seconds() -> int:
    """SENSOR_INTERVAL_SECONDS, default 1800 (30 minutes), at least 60."""
    value = int(os.environ.get("SENSOR_INTERVAL_SECONDS") or DEFAULT_INTERVAL_SECONDS)
    if value < MINIMUM_INTERVAL_SECONDS:
        raise ValueError(
            f"SENSOR_INTERVAL_SECONDS={value} is below the {MINIMUM_INTERVAL_SECONDS}-second "
            "minimum; set it to 60 or more"
        )
    return value


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
    minimum_interval_seconds=sensor_interval_seconds(),
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def salesforce_contacts_sensor(
    context: dg.SensorEvaluationContext, salesforce: ContactSource
) -> dg.RunRequest | dg.SkipReason:
    """Runs the profile path when any Salesforce Contact was added, edited or deleted."""
    marker = salesforce.change_marker()
    selection = profile_path_from(context, salesforce_contacts.key)
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


def file_fingerprint(path: Path, previous: dict | None) -> dict:
    """Size, mtime and content hash; the file is only read when size or mtime moved."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(missing_file_message(path)) from None
    fingerprint = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if previous and all(previous.get(k) == v for k, v in fingerprint.items()):
        return previous
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {**fingerprint, "sha256": digest.hexdigest()}


@dg.sensor(
    job=warehouse_actions_job,
    minimum_interval_seconds=sensor_interval_seconds(),
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def income_enrichment_sensor(
    context: dg.SensorEvaluationContext, income_file: EnrichmentFileResource
) -> dg.RunRequest | dg.SkipReason:
    """Runs the profile path when the enrichment vendor drops a file with new content."""
    path = Path(income_file.path)
    previous = json.loads(context.cursor) if context.cursor else None
    fingerprint = file_fingerprint(path, previous)
    selection = profile_path_from(context, income_enrichment.key)
    if fingerprint == previous:
        return rerun_if_last_failed(context, selection) or dg.SkipReason(
            f"{path} unchanged (size {fingerprint['size']}, same mtime)"
        )
    age = time.time() - fingerprint["mtime_ns"] / 1e9
    if age < income_file.settle_seconds:
        return dg.SkipReason(
            f"{path} changed {age:.0f}s ago and may still be being written; waiting until it "
            f"has been still for {income_file.settle_seconds:.0f}s (INCOME_SETTLE_SECONDS)"
        )
    context.update_cursor(json.dumps(fingerprint, sort_keys=True))
    if previous and previous.get("sha256") == fingerprint["sha256"]:
        return dg.SkipReason(f"{path} was touched but its content is unchanged")
    return dg.RunRequest(
        run_key=f"income:{fingerprint['sha256'][:16]}:{fingerprint['mtime_ns']}",
        asset_selection=selection,
        tags={TRIGGER_TAG: context.sensor_name},
    )
