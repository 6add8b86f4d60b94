"""A real `dagster dev` for end-to-end tests: its own process group, DAGSTER_HOME in tmp_path."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from dagster_graphql import DagsterGraphQLClient

from tests.conftest import REPO_ROOT, SAMPLE_DIR, free_port

LOCATION = "personalization_pipeline"
STARTUP_SECONDS = 120
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")

RUNS_QUERY = """
{ runsOrError { ... on Runs { results {
    runId status parentRunId tags { key value } } } } }
"""


def dagster_env(tmp_path: Path, redis_url: str, **settings: str) -> dict[str, str]:
    """The environment of a `dagster dev` on the sample data, the throwaway Redis and a warehouse
    and DAGSTER_HOME (seeded from the repository's dagster.yaml) in tmp_path."""
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "REDIS_URL": redis_url,
        "WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"),
        "SAMPLE_CONTACTS_PATH": str(SAMPLE_DIR / "salesforce_contacts.csv"),
        "INCOME_ENRICHMENT_PATH": str(SAMPLE_DIR / "income_enrichment.csv"),
        # A fresh clone has just written the sample file; don't wait a minute for it to settle.
        "INCOME_SETTLE_SECONDS": "0",
        # Keeps catalog_files_sensor quiet (no file is that old): a recommendations_job run
        # in its own process would add tens of seconds to every test of the profile path's
        # runs. That path runs in process in test_recommendations_job.py.
        "CATALOG_SETTLE_SECONDS": str(10**10),
        **settings,
    }


@dataclass(frozen=True)
class DagsterDev:
    process: subprocess.Popen
    client: DagsterGraphQLClient


@contextmanager
def running_dagster_dev(env: dict[str, str], log: Path) -> Iterator[DagsterDev]:
    """`dagster dev` (webserver, daemon, code server) until the block ends; then the whole group
    is stopped, unless the block already killed it."""
    port = free_port()
    dagster = Path(sys.executable).parent / "dagster"
    with log.open("ab") as output:
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
        yield DagsterDev(process, DagsterGraphQLClient("127.0.0.1", port_number=port))
    finally:
        stop_group(process, signal.SIGTERM)


def stop_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    """Signal the process's group, wait for its leader, then kill what is left of the group:
    a code server can outlive its parent by minutes after SIGTERM, holding the test's files."""
    if process.poll() is not None and sig != signal.SIGKILL:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(30)
    with contextlib.suppress(ProcessLookupError):
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


def graphql(client: DagsterGraphQLClient, query: str, variables: dict | None = None) -> dict:
    return client._execute(query, variables)


def runs(client: DagsterGraphQLClient) -> list[dict]:
    return graphql(client, RUNS_QUERY)["runsOrError"]["results"]


def wait_for_run(client: DagsterGraphQLClient, run_id: str, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while (status := client.get_run_status(run_id).value) not in FINISHED:
        assert time.monotonic() < deadline, f"run {run_id} still {status}"
        time.sleep(1)
    return status
