"""TLS and a least-privilege ACL user against a real ``redis-server --tls-port``.

The server listens on a plain port too, for the tests' own admin connection (creating the
ACL user, switching ``tls-auth-clients``); the code under test only ever uses the TLS port.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import redis

from personalization_pipeline.keys import sync_epoch_key
from personalization_pipeline.resources.redis import RedisResource
from personalization_pipeline.sync.redis_config import RedisDestination, RedisUnavailable, connect
from tests.conftest import free_port, start_redis_server
from tests.redis_fixtures import TlsFiles, sync_acl_setuser
from tests.test_warehouse_actions_job import expected_hashes, run_job

PASSWORD = "s3cret#/@pw"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, tls_files: TlsFiles) -> Iterator[tuple[int, redis.Redis]]:
    """(TLS port, admin client on the plain port) of a redis-server that requires client
    certificates signed by the test CA, with the README's ACL user."""
    plain, tls = free_port(), free_port()
    process = start_redis_server(
        tmp_path_factory.mktemp("tls-redis"),
        plain,
        "--tls-port",
        str(tls),
        "--tls-cert-file",
        str(tls_files.server_cert),
        "--tls-key-file",
        str(tls_files.server_key),
        "--tls-ca-cert-file",
        str(tls_files.ca),
        "--tls-auth-clients",
        "yes",
    )
    admin = redis.Redis(port=plain, decode_responses=True)
    admin.execute_command("ACL", *sync_acl_setuser(PASSWORD))
    admin.execute_command("ACL", *sync_acl_setuser(PASSWORD, "recommendations_sync"))
    yield tls, admin
    admin.close()
    process.terminate()
    process.wait(10)


@pytest.fixture
def tls_redis(tls_server) -> Iterator[tuple[int, redis.Redis]]:
    tls, admin = tls_server
    admin.flushall()
    admin.config_set("tls-auth-clients", "yes")
    yield tls, admin


def url(port: int, user: str = "profile_sync") -> str:
    return f"rediss://{user}:{PASSWORD}@127.0.0.1:{port}/0"


def test_the_job_runs_over_tls_with_a_client_certificate_as_the_acl_user(
    pipeline_resources, tls_redis, tls_files
):
    """Sync, read-back check and preview all work within the README's ACL rules."""
    port, admin = tls_redis
    resources = {
        **pipeline_resources,
        "redis": RedisResource(
            url=url(port),
            ca_cert_path=str(tls_files.ca),
            client_cert_path=str(tls_files.client_cert),
            client_key_path=str(tls_files.client_key),
        ),
    }
    result = run_job(resources)
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert "readback" in {check.check_name for check in checks}
    assert all(check.passed for check in checks)
    expected = expected_hashes()
    assert set(admin.scan_iter(count=1000)) == {*expected, sync_epoch_key("user_profiles")}
    assert all(admin.hgetall(key) == fields for key, fields in expected.items())
    assert not [entry for entry in admin.acl_log() if entry["username"] == "profile_sync"], (
        "the sync needed a command or key its ACL user is denied"
    )

    # The user really is limited: other keys, other commands, other data types.
    client = resources["redis"].get_client()
    for denied in (
        lambda: client.set("session:1", "x"),
        lambda: client.hset("product:1", "name", "x"),
        lambda: client.flushall(),
        lambda: client.keys("*"),
        lambda: client.delete("user:U000001"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            denied()
    client.close()


def test_the_recommendation_syncs_run_as_their_acl_user(pipeline_resources, tls_redis, tls_files):
    """recommendations_job (product hashes, sorted sets in MULTI/EXEC, read-back, preview)
    within the README's recommendations_sync ACL line, over TLS with a client certificate."""
    from personalization_pipeline.definitions import defs

    port, admin = tls_redis
    resources = {
        **pipeline_resources,
        "redis": RedisResource(
            url=url(port, "recommendations_sync"),
            ca_cert_path=str(tls_files.ca),
            client_cert_path=str(tls_files.client_cert),
            client_key_path=str(tls_files.client_key),
        ),
    }
    result = defs.resolve_job_def("recommendations_job").execute_in_process(resources=resources)
    assert result.success
    assert all(check.passed for check in result.get_asset_check_evaluations())
    assert admin.zcard("similar:SKU-1") > 0 and admin.exists("popular", "product:SKU-1") == 2
    assert not [e for e in admin.acl_log() if e["username"] == "recommendations_sync"], (
        "the recommendation syncs needed a command or key their ACL user is denied"
    )
    client = resources["redis"].get_client()
    for denied in (lambda: client.hset("user:U1", "x", "1"), lambda: client.flushall()):
        with pytest.raises(redis.exceptions.NoPermissionError):
            denied()


def test_the_ca_as_a_file_or_as_pem_text_like_rudderstack(tls_redis, tls_files):
    port, admin = tls_redis
    admin.config_set("tls-auth-clients", "no")
    for trust in (
        {"ca_cert_path": str(tls_files.ca)},
        {"ca_certificate": tls_files.ca.read_text()},
    ):
        client = connect(RedisDestination.from_url(url(port), **trust))
        client.hset("user:tls", "email", "a@example.com")
        assert client.hmget("user:tls", ["email"]) == [b"a@example.com"]
        client.close()


def refused(destination: RedisDestination, match: str) -> str:
    with pytest.raises(RedisUnavailable, match=match) as error:
        connect(destination)
    message = str(error.value)
    assert PASSWORD not in message and "PRIVATE KEY" not in message
    return message


def test_tls_failures_name_the_setting_to_fix(tls_redis, tls_files):
    port, _ = tls_redis
    client_cert = {
        "client_cert_path": str(tls_files.client_cert),
        "client_key_path": str(tls_files.client_key),
    }
    # A server certificate from a CA we were not told to trust (none, or the wrong one).
    refused(RedisDestination.from_url(url(port), **client_cert), "set REDIS_CA_CERT_PATH")
    refused(
        RedisDestination.from_url(url(port), ca_cert_path=str(tls_files.other_ca), **client_cert),
        "set REDIS_CA_CERT_PATH",
    )
    # The server requires a client certificate and got none.
    refused(
        RedisDestination.from_url(url(port), ca_cert_path=str(tls_files.ca)),
        "set REDIS_CLIENT_CERT_PATH and REDIS_CLIENT_KEY_PATH",
    )
    # Settings that cannot work are refused before connecting.
    with pytest.raises(
        ValueError, match=re.escape("REDIS_CA_CERT_PATH /nonexistent.pem is not a readable")
    ):
        connect(RedisDestination.from_url(url(port), ca_cert_path="/nonexistent.pem"))
    with pytest.raises(ValueError, match="without REDIS_CLIENT_CERT_PATH"):
        connect(
            RedisDestination.from_url(
                url(port), ca_cert_path=str(tls_files.ca), client_key_path=str(tls_files.ca)
            )
        )
    with pytest.raises(ValueError, match="use rediss://"):
        connect(
            RedisDestination.from_url(
                url(port).replace("rediss", "redis"), ca_cert_path=str(tls_files.ca)
            )
        )


def test_the_settings_reach_the_resource(monkeypatch, tls_files):
    from personalization_pipeline.resources.configured import resources_from_settings
    from personalization_pipeline.settings import Settings

    monkeypatch.delenv("REDIS_URL")  # an EnvVar, resolved only inside a run
    monkeypatch.setenv("REDIS_CA_CERT_PATH", str(tls_files.ca))
    monkeypatch.setenv("REDIS_CLIENT_CERT_PATH", str(tls_files.client_cert))
    monkeypatch.setenv("REDIS_CLIENT_KEY_PATH", str(tls_files.client_key))
    destination = resources_from_settings(Settings.from_env())["redis"].destination()
    assert destination.ca_cert_path == str(tls_files.ca)
    assert destination.client_cert_path == str(tls_files.client_cert)
    assert destination.client_key_path == str(tls_files.client_key)
