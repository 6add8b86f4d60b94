"""End to end through the UI's API: `dagster dev` serves the graph, runs the job, sensors tick."""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from dagster_graphql import DagsterGraphQLClient

from personalization_pipeline.keys import sync_epoch_key
from personalization_pipeline.sensors import TRIGGER_TAG
from tests.conftest import REPO_ROOT, SAMPLE_DIR, free_port
from tests.test_warehouse_actions_job import expected_hashes

LOCATION = "personalization_pipeline"
STARTUP_SECONDS = 120
RUN_SECONDS = 180

ASSET_GRAPH_QUERY = """
{ assetNodes { assetKey { path } groupName dependencyKeys { path } } }
"""
RUNS_QUERY = """
{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }
"""
SENSORS_QUERY = """
query ($selector: RepositorySelector!) {
  sensorsOrError(repositorySelector: $selector) {
    ... on Sensors { results { name minIntervalSeconds sensorState { status } } }
  }
}
"""


@pytest.fixture
def dagster_dev(tmp_path: Path, redis_url: str) -> Iterator[DagsterGraphQLClient]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "REDIS_URL": redis_url,
        "WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"),
        "SAMPLE_CONTACTS_PATH": str(SAMPLE_DIR / "salesforce_contacts.csv"),
        "INCOME_ENRICHMENT_PATH": str(SAMPLE_DIR / "income_enrichment.csv"),
        # A fresh clone has just written the sample file; don't wait a minute for it to settle.
        "INCOME_SETTLE_SECONDS": "0",
    }
    dagster = Path(sys.executable).parent / "dagster"
    log = tmp_path / "dagster.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,  # so the whole group (webserver, daemon, code server) stops
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_serving(process, port, log)
        yield DagsterGraphQLClient("127.0.0.1", port_number=port)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def wait_until_serving(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"dagster dev did not start:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


def finished_status(client: DagsterGraphQLClient, run_id: str) -> str:
    """The run's status once it is SUCCESS, FAILURE or CANCELED (fails after RUN_SECONDS)."""
    deadline = time.monotonic() + RUN_SECONDS
    while (status := client.get_run_status(run_id).value) not in (
        "SUCCESS",
        "FAILURE",
        "CANCELED",
    ):
        assert time.monotonic() < deadline, f"run {run_id} still {status}"
        time.sleep(1)
    return status


def graphql(client: DagsterGraphQLClient, query: str, variables: dict | None = None) -> dict:
    return client._execute(query, variables)


def test_ui_serves_the_graph_runs_the_job_and_sensors_are_on(dagster_dev, redis_client):
    nodes = {
        "/".join(n["assetKey"]["path"]): n
        for n in graphql(dagster_dev, ASSET_GRAPH_QUERY)["assetNodes"]
    }
    assert {k: n["groupName"] for k, n in nodes.items()} == {
        "salesforce_contacts": "sources",
        "income_enrichment": "sources",
        "raw_events": "sources",
        "user_profiles": "warehouse",
        "redis_user_profiles": "activation",
    }
    assert {d["path"][0] for d in nodes["user_profiles"]["dependencyKeys"]} == {
        "salesforce_contacts",
        "income_enrichment",
        "raw_events",
    }

    selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}
    sensors = graphql(dagster_dev, SENSORS_QUERY, {"selector": selector})["sensorsOrError"]
    assert {
        s["name"]: (s["sensorState"]["status"], s["minIntervalSeconds"]) for s in sensors["results"]
    } == {
        "salesforce_contacts_sensor": ("RUNNING", 1800),
        "income_enrichment_sensor": ("RUNNING", 1800),
        # Its first tick finds the streams empty and starts nothing.
        "events_sensor": ("RUNNING", 30),
    }

    run_id = dagster_dev.submit_job_execution(
        "warehouse_actions_job", repository_location_name=LOCATION
    )
    assert finished_status(dagster_dev, run_id) == "SUCCESS"
    # Both sensors start runs of their own at start-up, beside ours: every run must succeed.
    deadline = time.monotonic() + RUN_SECONDS
    while True:
        runs = graphql(dagster_dev, RUNS_QUERY)["runsOrError"]["results"]
        triggers = {t["value"] for run in runs for t in run["tags"] if t["key"] == TRIGGER_TAG}
        finished = all(run["status"] in ("SUCCESS", "FAILURE", "CANCELED") for run in runs)
        if finished and triggers == {"salesforce_contacts_sensor", "income_enrichment_sensor"}:
            break
        assert time.monotonic() < deadline, runs
        time.sleep(1)
    assert {run["runId"]: run["status"] for run in runs} == {
        run["runId"]: "SUCCESS" for run in runs
    }
    expected = expected_hashes()
    assert set(redis_client.scan_iter(count=1000)) == {*expected, sync_epoch_key("user_profiles")}
    for key in ("user:U000001", "user:U000002"):
        assert redis_client.hgetall(key) == expected[key]
