"""A run worker killed mid-step must not hold the `duckdb` pool slot, and so the warehouse, forever.

Real parts throughout: `dagster dev` (its daemon, sensors and code server), run workers killed
with SIGKILL mid-step while they land a contact export, the throwaway redis-server, DuckDB in
tmp_path, and the `personalization` command.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import psutil
import pytest
import yaml
from dagster._core.launcher import WorkerStatus

from personalization_pipeline.run_workers import (
    START_TIME_SLACK_SECONDS,
    WORKER_HOST_TAG,
    WORKER_PID_TAG,
    PidCheckingRunLauncher,
    free_stuck_runs,
    inspect_worker,
)
from tests.conftest import REPO_ROOT, SAMPLE_DIR
from tests.dagster_dev import (
    FINISHED,
    DagsterDev,
    dagster_env,
    graphql,
    running_dagster_dev,
    runs,
    stop_group,
)

# Big enough that landing it takes seconds, so a worker can be killed in the middle of it.
BIG_EXPORT_COPIES = 150
# The promise: the pool is free again within a minute or two of the crash.
FREED_SECONDS = 120
# Then every run has to finish; each spawns a worker, which takes long on a loaded machine.
RUNS_SECONDS = 300
POOL_QUERY = """
{ instance { concurrencyLimit(concurrencyKey: "duckdb") {
    claimedSlots { runId stepKey } pendingSteps { runId stepKey } } } }
"""
RUN_LOGS_QUERY = """
query ($runId: ID!) { logsForRun(runId: $runId) { ... on EventConnection { events {
    __typename
    ... on MessageEvent { message }
    ... on ExecutionStepFailureEvent { error { message } }
    ... on EngineEvent { stepKey metadataEntries { label ... on TextMetadataEntry { text } } }
} } } }
"""


def write_big_export(path: Path) -> None:
    """The sample contact export, repeated with fresh ids, emails and user ids."""
    sample = pd.read_csv(SAMPLE_DIR / "salesforce_contacts.csv", dtype=str, keep_default_na=False)
    copies = []
    for copy in range(BIG_EXPORT_COPIES):
        frame = sample.copy()
        frame["Id"] = [f"003Dn{copy:04d}{n:06d}AAA"[:18] for n in range(len(frame))]
        frame["Email"] = f"c{copy}." + frame["Email"]
        frame["App_User_Id__c"] = [f"U{copy:04d}{n:05d}" for n in range(len(frame))]
        copies.append(frame)
    pd.concat(copies).to_csv(path, index=False)


def fast_monitoring(env: dict[str, str]) -> None:
    """The repository's dagster.yaml with the monitoring daemon polling every 2 s, not 30, and
    failing a run caught between launch and start after 60 s, not 180."""
    path = Path(env["DAGSTER_HOME"]) / "dagster.yaml"
    config = yaml.safe_load(path.read_text())
    config["run_monitoring"].update(
        poll_interval_seconds=2, free_slots_after_run_end_seconds=1, start_timeout_seconds=60
    )
    path.write_text(yaml.safe_dump(config))


def wait_until(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


def claimed_slots(dev: DagsterDev) -> list[dict]:
    return graphql(dev.client, POOL_QUERY)["instance"]["concurrencyLimit"]["claimedSlots"]


def run_logs(dev: DagsterDev, run_id: str) -> list[dict]:
    return graphql(dev.client, RUN_LOGS_QUERY, {"runId": run_id})["logsForRun"]["events"]


def worker_pid_in_logs(dev: DagsterDev, run_id: str) -> int | None:
    """The run worker's pid, as its "Started process for run" engine event shows it in the UI."""
    for event in run_logs(dev, run_id):
        if event["__typename"] == "EngineEvent" and event["stepKey"] is None:
            for entry in event["metadataEntries"]:
                if entry["label"] == "pid":
                    return int(entry["text"])
    return None


def landing_export(pid: int, export: Path) -> bool:
    """Whether the process is reading the export right now (not just about to)."""
    try:
        return any(Path(f.path) == export for f in psutil.Process(pid).open_files())
    except psutil.NoSuchProcess:
        return False


def kill_worker_mid_landing(dev: DagsterDev, export: Path) -> tuple[str, int]:
    """Wait for a run to land the big export while holding the pool slot; return (run, pid) with
    the export already swapped for the small sample, so the runs after it are quick."""
    slot = wait_until(
        lambda: next(
            (s for s in claimed_slots(dev) if s["stepKey"] == "salesforce_contacts"), None
        ),
        RUNS_SECONDS,
        "a run to claim the duckdb slot for salesforce_contacts",
    )
    run_id = slot["runId"]
    pid = wait_until(lambda: worker_pid_in_logs(dev, run_id), 30, "the worker's pid")
    wait_until(lambda: landing_export(pid, export), 30, "the worker to open the export")
    # The worker keeps reading the file it opened; every later run reads the small one.
    small = export.with_suffix(".small")
    small.write_bytes((SAMPLE_DIR / "salesforce_contacts.csv").read_bytes())
    os.replace(small, export)
    return run_id, pid


def wait_until_freed(dev: DagsterDev, killed: set[str]) -> float:
    """Seconds until the killed runs are failed and hold no pool slot."""
    started = time.monotonic()

    def freed() -> bool:
        failed = {run["runId"] for run in runs(dev.client) if run["status"] == "FAILURE"}
        holding = {slot["runId"] for slot in claimed_slots(dev)}
        return killed <= failed and not killed & holding

    wait_until(freed, FREED_SECONDS, "the killed runs to fail and free the duckdb slot")
    return time.monotonic() - started


def wait_for_every_run(dev: DagsterDev, killed: set[str]) -> list[dict]:
    """The runs once every one has finished and each killed run has been retried."""

    def finished():
        every_run = runs(dev.client)
        retried = {run["parentRunId"] for run in every_run}
        done = all(run["status"] in FINISHED for run in every_run)
        return every_run if done and killed <= retried else None

    return wait_until(finished, RUNS_SECONDS, "every run to finish")


def failure_message(dev: DagsterDev, run_id: str) -> str:
    return next(e["message"] for e in run_logs(dev, run_id) if e["__typename"] == "RunFailureEvent")


def unexpected_failures(dev: DagsterDev, every_run: list[dict], expected: set[str]) -> dict:
    """Why each failed run but ``expected`` failed (its step and run failures), to show in an
    assertion."""
    return {
        run["runId"]: [
            (event.get("error") or {}).get("message") or event["message"]
            for event in run_logs(dev, run["runId"])
            if event["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent")
        ]
        for run in every_run
        if run["status"] == "FAILURE" and run["runId"] not in expected
    }


@pytest.fixture
def big_export_env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    export = tmp_path / "contacts.csv"
    write_big_export(export)
    # The tests swap the big export for the small one mid-run, so later runs really do delete
    # most of what the killed run landed: the delete guard must let them.
    env = dagster_env(
        tmp_path, redis_url, SAMPLE_CONTACTS_PATH=str(export), SALESFORCE_MAX_DELETE_FRACTION="1"
    )
    fast_monitoring(env)
    return env


def test_a_killed_worker_frees_its_slot_and_its_run_is_retried(big_export_env, tmp_path):
    """The worker alone dies (the OOM killer): the run is failed, the monitoring daemon frees
    the slot, run_retries reruns it, and the run that waited on the pool goes on."""
    export = Path(big_export_env["SAMPLE_CONTACTS_PATH"])
    with running_dagster_dev(big_export_env, tmp_path / "dagster.log") as dev:
        victim, pid = kill_worker_mid_landing(dev, export)
        os.kill(pid, signal.SIGKILL)
        freed_in = wait_until_freed(dev, {victim})
        every_run = wait_for_every_run(dev, {victim})
        assert claimed_slots(dev) == []
        messages = "\n".join(str(event.get("message")) for event in run_logs(dev, victim))
        step_errors = unexpected_failures(dev, every_run, {victim})
    status = {run["runId"]: run["status"] for run in every_run}
    assert status.pop(victim) == "FAILURE"
    # The retry and the run that waited.
    assert status == dict.fromkeys(status, "SUCCESS"), step_errors
    # Whichever notices first fails the run: the code server (it polls its workers every 0.5 s,
    # when not too busy) or the monitoring daemon's pid check (every 2 s here).
    assert (
        f"Run execution process for {victim} was terminated by signal 9 (SIGKILL)" in messages
        or f"Run worker process {pid} on {socket.gethostname()} is gone" in messages
    ), messages
    print(f"duckdb pool freed {freed_in:.1f} s after the kill")  # pytest -s shows it


def test_runs_of_a_dead_dagster_are_failed_by_the_restarted_daemon(big_export_env, tmp_path):
    """Everything dies at once (the machine, the container): nobody reports the runs, they stay
    STARTED holding the slot. The restarted daemon finds their worker pids gone, fails them
    saying so, frees the slot, and run_retries reruns them. A run the crash caught while it was
    being launched (STARTING, no worker yet) is failed by the start timeout and rerun too."""
    export = Path(big_export_env["SAMPLE_CONTACTS_PATH"])
    log = tmp_path / "dagster.log"
    with running_dagster_dev(big_export_env, log) as dev:
        victim, pid = kill_worker_mid_landing(dev, export)
        stop_group(dev.process, signal.SIGKILL)
        started = {run.run_id for run in runs_in_storage(big_export_env, "STARTED", "STARTING")}
    assert victim in started
    wait_until(lambda: dead(pid), 10, f"worker {pid} to die with its process group")
    with running_dagster_dev(big_export_env, log) as dev:
        freed_in = wait_until_freed(dev, started)
        every_run = wait_for_every_run(dev, started)
        assert claimed_slots(dev) == []
        messages = {run_id: failure_message(dev, run_id) for run_id in started}
        step_errors = unexpected_failures(dev, every_run, started)
    status = {run["runId"]: run["status"] for run in every_run}
    assert {run_id: status.pop(run_id) for run_id in started} == dict.fromkeys(started, "FAILURE")
    assert status == dict.fromkeys(status, "SUCCESS"), step_errors
    assert f"Run worker process {pid} on {socket.gethostname()} is gone" in messages[victim]
    print(f"duckdb pool freed {freed_in:.1f} s after the restart")


def dead(pid: int) -> bool:
    """Gone, or a zombie nobody has reaped yet (its parent died with the group)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def runs_in_storage(env: dict[str, str], *statuses: str) -> list[dg.DagsterRun]:
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        filters = dg.RunsFilter(statuses=[dg.DagsterRunStatus(status) for status in statuses])
        return list(instance.get_runs(filters))


def test_free_stuck_runs_recovers_a_killed_command_line_run(big_export_env, tmp_path):
    """No daemon: `personalization demo` killed mid-step leaves its run STARTED with the slot;
    `personalization free-stuck-runs` fails it and frees the slot, so the next demo completes."""
    export = Path(big_export_env["SAMPLE_CONTACTS_PATH"])
    personalization = [sys.executable, "-m", "personalization_pipeline.cli"]
    with (tmp_path / "demo.log").open("wb") as output:
        demo = subprocess.Popen(
            [*personalization, "demo"],
            cwd=REPO_ROOT,
            env=big_export_env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: landing_export(demo.pid, export), 120, "the demo to open the export")
    finally:
        demo.kill()
        demo.wait()
    [stuck] = runs_in_storage(big_export_env, "STARTED")
    with dg.DagsterInstance.from_config(big_export_env["DAGSTER_HOME"]) as instance:
        holding = instance.event_log_storage.get_concurrency_run_ids()
    assert holding == {stuck.run_id}

    freed = subprocess.run(
        [*personalization, "free-stuck-runs"],
        cwd=REPO_ROOT,
        env=big_export_env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"Failed run {stuck.run_id}: Run worker process {demo.pid}" in freed.stdout
    assert f"Freed the pool slots of finished run {stuck.run_id}" in freed.stdout
    with dg.DagsterInstance.from_config(big_export_env["DAGSTER_HOME"]) as instance:
        assert instance.get_run_by_id(stuck.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.event_log_storage.get_concurrency_run_ids() == set()

    export.write_bytes((SAMPLE_DIR / "salesforce_contacts.csv").read_bytes())
    again = subprocess.run(
        [*personalization, "demo"],
        cwd=REPO_ROOT,
        env=big_export_env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]


def started_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> dg.DagsterRun:
    """A run as its worker leaves it once started: STARTED, with a start time."""
    run = instance.create_run_for_job(dg.GraphDefinition(name="g").to_job(), tags=tags)
    instance.report_dagster_event(
        dg.DagsterEvent(event_type_value=dg.DagsterEventType.RUN_START.value, job_name="g"),
        run_id=run.run_id,
    )
    return instance.get_run_by_id(run.run_id)


def worker_tags(pid: int, host: str | None = None) -> dict[str, str]:
    return {WORKER_HOST_TAG: host or socket.gethostname(), WORKER_PID_TAG: str(pid)}


def health(instance: dg.DagsterInstance, run: dg.DagsterRun) -> WorkerStatus:
    launcher = PidCheckingRunLauncher()
    launcher.register_instance(instance)
    return launcher.check_run_worker_health(run).status


def test_a_worker_is_alive_until_killed():
    worker = subprocess.Popen(["sleep", "60"])
    with dg.instance_for_test() as instance:
        run = started_run(instance, worker_tags(worker.pid))
        assert inspect_worker(instance, run).gone is False
        assert health(instance, run) == WorkerStatus.RUNNING
        worker.kill()
        worker.wait()
        gone = inspect_worker(instance, run)
        assert gone.gone is True
        assert f"Run worker process {worker.pid} on {socket.gethostname()} is gone" in (
            gone.description
        )
        assert health(instance, run) == WorkerStatus.FAILED


def test_a_process_started_after_the_run_is_not_its_worker():
    """A reused pid (after a reboot, say) belongs to a process younger than the run."""
    with dg.instance_for_test() as instance:
        run = started_run(instance, {})
        # Past the slack; and Linux's boot time is whole seconds, so a create time reads early.
        time.sleep(START_TIME_SLACK_SECONDS + 1.5)
        stranger = subprocess.Popen(["sleep", "60"])
        try:
            instance.add_run_tags(run.run_id, worker_tags(stranger.pid))
            assert inspect_worker(instance, instance.get_run_by_id(run.run_id)).gone is True
        finally:
            stranger.kill()
            stranger.wait()


@pytest.mark.parametrize("tags", [{}, worker_tags(1, host="another-machine")])
def test_a_worker_that_cannot_be_checked_from_here_is_left_running(tags):
    """No host tag (a run launched elsewhere) or another host: a pid says nothing here."""
    with dg.instance_for_test() as instance:
        run = started_run(instance, tags)
        assert inspect_worker(instance, run).gone is None
        assert health(instance, run) == WorkerStatus.RUNNING


def test_free_stuck_runs_leaves_an_unjudged_run_until_it_is_terminated():
    """A run that records no worker pid keeps its slot until someone marks it canceled (the UI's
    force termination does exactly that); then free-stuck-runs frees the slot."""
    with dg.instance_for_test(
        overrides={"concurrency": {"pools": {"default_limit": 1}}}
    ) as instance:
        run = started_run(instance, {})
        instance.event_log_storage.claim_concurrency_slot("duckdb", run.run_id, "user_profiles")
        stuck = free_stuck_runs(instance)
        assert (stuck.failed, stuck.freed, list(stuck.unchecked)) == ({}, [], [run.run_id])
        instance.report_run_canceled(run)
        assert free_stuck_runs(instance).freed == [run.run_id]
        assert instance.event_log_storage.get_concurrency_run_ids() == set()
