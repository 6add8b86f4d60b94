"""Shared fixtures, real parts only: a throwaway redis-server per session, DuckDB in tmp_path."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import settings

from personalization_pipeline.cli import redis_server_command

# Anything that falls back to the configured defaults must fail loudly instead of touching the
# machine's own Redis or the demo warehouse: tests pass their resources explicitly.
os.environ["REDIS_URL"] = "redis://127.0.0.1:1/0"
os.environ["WAREHOUSE_PATH"] = "/nonexistent/tests-must-use-tmp_path.duckdb"
# Property tests check behaviour, not speed (that is benchmarks/'s job): a loaded CI machine
# must not fail them on Hypothesis's per-example deadline.
settings.register_profile("project", deadline=None)
settings.load_profile("project")

# Settings read at import time: tests assert the documented defaults, whatever the shell exports.
for setting in (
    "SENSOR_INTERVAL_SECONDS",
    "RECONCILE_CRON",
    "REDIS_VERIFY_CRON",
    "REDIS_KEY_PREFIX",
    "PREVIEW_PERSONAL_DATA",
):
    os.environ.pop(setting, None)

pytest_plugins = ["tests.salesforce_fixtures", "tests.redis_fixtures"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis_server(directory: Path, port: int, *extra: str) -> subprocess.Popen:
    """Start a redis-server that keeps nothing on disk and wait until it answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed: apt-get install redis-server (.ci/run does this)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [*redis_server_command(binary, port, directory), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"redis-server on port {port} did not start")
            time.sleep(0.02)
        finally:
            client.close()


@pytest.fixture(autouse=True)
def settings_read_afresh():
    """Settings are read once per process; a test that set a variable must not leave them."""
    from personalization_pipeline.settings import current

    yield
    current.cache_clear()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a private redis-server for this test session; never the machine's shared Redis."""
    port = free_port()
    process = start_redis_server(tmp_path_factory.mktemp("redis"), port)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session's Redis, flushed before each test so tests never see each other's keys."""
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    yield redis_server


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO_ROOT / "data" / "sample"


@pytest.fixture
def pipeline_resources(tmp_path: Path, redis_url: str) -> dict:
    """The demo's resources, pointed at a DuckDB file in tmp_path and the throwaway Redis."""
    from personalization_pipeline.resources.catalog import (
        CatalogFilesResource,
        ModelSettingsResource,
    )
    from personalization_pipeline.resources.enrichment import EnrichmentFileResource
    from personalization_pipeline.resources.redis import RedisResource
    from personalization_pipeline.resources.rules import ProfileRulesResource
    from personalization_pipeline.resources.salesforce import SampleContactSource
    from personalization_pipeline.resources.warehouse import WarehouseResource

    return {
        "salesforce": SampleContactSource(path=str(SAMPLE_DIR / "salesforce_contacts.csv")),
        "income_file": EnrichmentFileResource(path=str(SAMPLE_DIR / "income_enrichment.csv")),
        "warehouse": WarehouseResource(path=str(tmp_path / "warehouse.duckdb")),
        "redis": RedisResource(url=redis_url),
        "rules": ProfileRulesResource(),
        "catalog_files": CatalogFilesResource(
            products_path=str(SAMPLE_DIR / "products.csv"),
            orders_path=str(SAMPLE_DIR / "orders.csv"),
        ),
        "model": ModelSettingsResource(),
    }
