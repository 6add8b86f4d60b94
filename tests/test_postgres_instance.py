"""The production instance: storage on PostgreSQL, webserver and daemon as separate processes.

Runs against the PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth) in a database the
test creates under a unique name and drops afterwards; skipped where there is none. The
instance is ``dagster.yaml`` with its commented PostgreSQL block switched on, so the block
the README points to is the one tested.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster_graphql import DagsterGraphQLClient

from personalization_pipeline.keys import sync_epoch_key
from tests.conftest import REPO_ROOT, free_port
from tests.dagster_dev import (
    LOCATION,
    dagster_env,
    stop_group,
    wait_for_run,
    wait_until_serving,
)
from tests.test_warehouse_actions_job import expected_hashes

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A new, uniquely named database, dropped (with its connections) after the test."""
    psycopg2 = pytest.importorskip(
        "psycopg2", reason="dagster-postgres is not installed: pip install -e '.[postgres]'"
    )
    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=3, **PG)
    except psycopg2.OperationalError as error:
        pytest.skip(f"no PostgreSQL with trust auth for user postgres at 127.0.0.1:5432: {error}")
    admin.autocommit = True
    name = f"pipeline_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


def query(database: str, sql: str, *parameters: object) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(dbname=database, **PG) as connection, connection.cursor() as cursor:
        cursor.execute(sql, parameters)
        rows = cursor.fetchall()
    connection.close()
    return rows


def postgres_instance_yaml() -> str:
    """``dagster.yaml`` with its commented ``storage: postgres`` block uncommented."""
    lines = (REPO_ROOT / "dagster.yaml").read_text().splitlines()
    start = lines.index("# storage:")
    end = start + 1
    while lines[end].startswith("#   "):
        end += 1
    block = [line.removeprefix("# ") for line in lines[start:end]]
    return "\n".join([*block, *lines]) + "\n"


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as output:
        return subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,  # the daemon's run workers and code servers stop with it
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def test_webserver_and_daemon_share_a_postgres_instance(
    tmp_path, postgres_database, redis_url, redis_client
):
    # The environment the other `dagster dev` tests use (sample data, quiet catalog sensor),
    # with an instance on PostgreSQL instead of the repository's dagster.yaml.
    env = dagster_env(
        tmp_path,
        redis_url,
        DAGSTER_PG_HOST=PG["host"],
        DAGSTER_PG_USER=PG["user"],
        DAGSTER_PG_PASSWORD="",
        DAGSTER_PG_DB=postgres_database,
    )
    home = Path(env["DAGSTER_HOME"])
    (home / "dagster.yaml").write_text(postgres_instance_yaml())
    bin_dir = Path(sys.executable).parent
    port = free_port()
    webserver = start(
        [str(bin_dir / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1",
         "-p", str(port)],
        env,
        tmp_path / "webserver.log",
    )  # fmt: skip
    daemon = start(
        [str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        env,
        tmp_path / "daemon.log",
    )
    try:
        wait_until_serving(webserver, port, tmp_path / "webserver.log")
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        # The webserver only queues the run; the daemon (another process) dequeues and
        # launches it: the two meet nowhere but in PostgreSQL.
        run_id = client.submit_job_execution(
            "warehouse_actions_job", repository_location_name=LOCATION
        )
        status = wait_for_run(client, run_id, 180)
        assert status == "SUCCESS", (tmp_path / "daemon.log").read_text()[-3000:]
        assert query(postgres_database, "SELECT status FROM runs WHERE run_id = %s", run_id) == [
            ("SUCCESS",)
        ]
        daemons = {
            row[0] for row in query(postgres_database, "SELECT daemon_type FROM daemon_heartbeats")
        }
        assert "QUEUED_RUN_COORDINATOR" in daemons and "SENSOR" in daemons
        # Nothing went to SQLite beside the instance.
        assert not list(home.rglob("*.db"))
    finally:
        stop_group(daemon, signal.SIGTERM)
        stop_group(webserver, signal.SIGTERM)
    expected = expected_hashes()
    assert set(redis_client.scan_iter(count=1000)) == {*expected, sync_epoch_key("user_profiles")}
