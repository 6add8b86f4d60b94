"""End to end through the UI's API: `dagster dev` serves the graph, runs the job, sensors tick."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster_graphql import DagsterGraphQLClient

from assets.sensors import TRIGGER_TAG
from personalization_pipeline.keys import sync_epoch_key
from tests.dagster_dev import (
    FINISHED,
    LOCATION,
    dagster_env,
    graphql,
    running_dagster_dev,
    runs,
    wait_for_run,
)
from tests.test_warehouse_actions_job import expected_hashes

RUN_SECONDS = 180

ASSET_GRAPH_QUERY = """
{ assetNodes { assetKey { path } groupName dependencyKeys { path } } }
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
    with running_dagster_dev(dagster_env(tmp_path, redis_url), tmp_path / "dagster.log") as dev:
        yield dev.client


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
        "products": "sources",
        "orders": "sources",
        "product_recommendations": "models",
        "redis_products": "activation",
        "redis_product_similarity": "activation",
        "redis_popular_products": "activation",
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
        # Kept quiet here (tests/dagster_dev.py), and nothing drained yet: no runs.
        "catalog_files_sensor": ("RUNNING", 1800),
        "recommendations_after_drain_sensor": ("RUNNING", 3600),
    }

    run_id = dagster_dev.submit_job_execution(
        "warehouse_actions_job", repository_location_name=LOCATION
    )
    assert wait_for_run(dagster_dev, run_id, RUN_SECONDS) == "SUCCESS"
    # Both sensors start runs of their own at start-up, beside ours: every run must succeed.
    deadline = time.monotonic() + RUN_SECONDS
    while True:
        every_run = runs(dagster_dev)
        triggers = {t["value"] for run in every_run for t in run["tags"] if t["key"] == TRIGGER_TAG}
        finished = all(run["status"] in FINISHED for run in every_run)
        if finished and triggers == {"salesforce_contacts_sensor", "income_enrichment_sensor"}:
            break
        assert time.monotonic() < deadline, every_run
        time.sleep(1)
    assert {run["runId"]: run["status"] for run in every_run} == {
        run["runId"]: "SUCCESS" for run in every_run
    }
    expected = expected_hashes()
    assert set(redis_client.scan_iter(count=1000)) == {*expected, sync_epoch_key("user_profiles")}
    for key in ("user:U000001", "user:U000002"):
        assert redis_client.hgetall(key) == expected[key]
