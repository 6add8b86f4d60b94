"""Crashed run workers: notice them, fail their runs and free their `duckdb` pool slot.

A run worker killed with kill -9 or by the out-of-memory killer reports nothing. While the code
server that spawned it lives, the code server notices and fails the run. When the code server
went down too (the machine, the container, `dagster dev` killed), nothing notices: the run stays
STARTED and keeps its pool slot, so every later run waits on the pool for good.

Dagster's run-monitoring daemon fails such runs, but only through a run launcher that can report
a worker's health, and `DefaultRunLauncher` cannot (its monitoring offers only a maximum
runtime). `PidCheckingRunLauncher` can: a run worker records its pid in the run's "Started
process for run" engine event, and the launcher tags the run with the host the worker runs on,
because a pid means something on that host only. A worker is alive while that process exists,
is not a zombie and started before the run did (so a reused pid is not mistaken for it). This
is a launcher, not a sensor: the daemon then does the rest the Dagster way (its failure message,
`run_retries`), and nothing new runs on a schedule of its own.

Failing a run does not free its pool slots (the worker that claimed them frees them as each step
ends). The monitoring daemon frees the slots of finished runs after
`run_monitoring.free_slots_after_run_end_seconds` in dagster.yaml; without a daemon,
`personalization free-stuck-runs` does both steps (see `free_stuck_runs`).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass

import dagster as dg
import psutil
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG

WORKER_HOST_TAG = "personalization/worker_host"
WORKER_PID_TAG = "personalization/worker_pid"
# A code server reached through one of these runs its workers on the launcher's machine.
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", socket.gethostname()}
# A worker starts before its run does; this much leeway covers clock rounding on any OS.
START_TIME_SLACK_SECONDS = 1.0


def in_process_worker_tags() -> dict[str, str]:
    """Tags for a run executed in this process (execute_in_process): its worker is this process."""
    return {WORKER_HOST_TAG: socket.gethostname(), WORKER_PID_TAG: str(os.getpid())}


class PidCheckingRunLauncher(dg.DefaultRunLauncher):
    """DefaultRunLauncher that tells the run-monitoring daemon whether a run's worker is alive."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def launch_run(self, context: LaunchRunContext) -> None:
        super().launch_run(context)
        run_id = context.dagster_run.run_id
        run = self._instance.get_run_by_id(run_id)
        grpc = json.loads(run.tags.get(GRPC_INFO_TAG, "{}")) if run else {}
        if "socket" in grpc or grpc.get("host") in LOCAL_HOSTS:
            self._instance.add_run_tags(run_id, {WORKER_HOST_TAG: socket.gethostname()})

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        # UNKNOWN would fail the run: a worker that cannot be checked from here is left alone
        # (run_monitoring.max_runtime_seconds still bounds it).
        worker = inspect_worker(self._instance, run)
        status = WorkerStatus.FAILED if worker.gone else WorkerStatus.RUNNING
        return CheckRunHealthResult(status, worker.description)


@dataclass(frozen=True)
class Worker:
    gone: bool | None  # None: cannot be checked from this machine
    description: str


def inspect_worker(instance: dg.DagsterInstance, run: dg.DagsterRun) -> Worker:
    """Whether a started run's worker process is gone, judged only on the worker's own host."""
    here = socket.gethostname()
    host = run.tags.get(WORKER_HOST_TAG)
    if host != here:
        return Worker(
            None, f"cannot check a run worker on {host or 'an unrecorded host'} from {here}"
        )
    pid = worker_pid(instance, run)
    if pid is None:
        return Worker(None, "the run worker has not reported its pid")
    record = instance.get_run_record_by_id(run.run_id)
    if process_alive(pid, started_by=record.start_time if record else None):
        return Worker(False, f"run worker process {pid} on {host} is alive")
    return Worker(
        True,
        f"Run worker process {pid} on {host} is gone: it was killed (kill -9, the out-of-memory "
        "killer) or its machine went down, without reporting the end of the run.",
    )


def worker_pid(instance: dg.DagsterInstance, run: dg.DagsterRun) -> int | None:
    """The pid tagged on the run, else the one its worker logged when it started."""
    if WORKER_PID_TAG in run.tags:
        return int(run.tags[WORKER_PID_TAG])
    for entry in reversed(instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)):
        event = entry.dagster_event
        pid = event.engine_event_data.metadata.get("pid") if event else None
        # Run-level only: step-level engine events name step subprocesses, not the worker.
        if pid is not None and event.step_key is None:
            return int(pid.value)
    return None


def process_alive(pid: int, started_by: float | None) -> bool:
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started_by is None or process.create_time() <= started_by + START_TIME_SLACK_SECONDS
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process exists; it cannot be told apart
        return True


@dataclass(frozen=True)
class StuckRuns:
    failed: dict[str, str]  # run id -> why it was failed
    freed: list[str]  # finished runs whose pool slots were released
    unchecked: dict[str, str]  # started run id -> why its worker could not be checked


def free_stuck_runs(instance: dg.DagsterInstance) -> StuckRuns:
    """What the monitoring daemon does, once, for instances run without one (the command line).

    Fails each started run whose worker is provably gone, then frees the pool slots still held
    by finished runs. Runs whose worker cannot be checked from here are reported, not touched.
    """
    failed, unchecked = {}, {}
    for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        worker = inspect_worker(instance, run)
        if worker.gone:
            instance.report_run_failed(run, f"{worker.description} Failed by free-stuck-runs.")
            failed[run.run_id] = worker.description
        elif worker.gone is None:
            unchecked[run.run_id] = worker.description
    freed = []
    holding = instance.event_log_storage.get_concurrency_run_ids()
    for run in instance.get_runs(dg.RunsFilter(run_ids=list(holding))) if holding else []:
        if run.is_finished:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            freed.append(run.run_id)
    return StuckRuns(failed=failed, freed=freed, unchecked=unchecked)
