"""REDIS_URL: passwords with any character work, and no message, log or metadata shows them."""

from __future__ import annotations

import pytest
import redis

from personalization_pipeline.definitions import defs
from personalization_pipeline.resources.redis import RedisResource, redact
from personalization_pipeline.sync.redis_config import RedisDestination, connect
from tests.conftest import free_port, start_redis_server

SECRET = "pa#ss/w?rd@:x"


@pytest.mark.parametrize(
    "password", ["s3cret", "p#w", "p/w", "p?w", "p@w", "p:w", SECRET, "p%23w-encoded"]
)
def test_passwords_with_url_characters_log_in_to_a_real_server(tmp_path, password):
    port = free_port()
    server = start_redis_server(tmp_path / "r", port)
    redis.Redis(port=port).config_set("requirepass", password.replace("%23", "#"))
    try:
        url = f"redis://:{password}@127.0.0.1:{port}/2"
        destination = RedisDestination.from_url(url)
        # An already percent-encoded password is decoded, as redis-py and RudderStack do.
        assert destination.password == password.replace("%23", "#")
        assert destination.display_url() == f"redis://127.0.0.1:{port}/2"
        client = connect(url)
        assert client.ping() and client.connection_pool.connection_kwargs["db"] == 2
        client.close()
    finally:
        server.kill()
        server.wait(10)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"redis//:{SECRET}@cache:6379/0", "must start with redis://"),
        (f"http://:{SECRET}@cache:6379/0", "must start with redis://"),
        (f"redis://:{SECRET}@cache:63a9/0", "port '63a9'"),
        (f"redis://:{SECRET}@cache:6379/two", "database 'two'"),
        (f"redis://:{SECRET}@cache:6379/0?ssl=true", "query options"),
    ],
)
def test_malformed_urls_are_refused_without_showing_the_password(url, problem):
    with pytest.raises(ValueError, match=problem) as error:
        RedisDestination.from_url(url)
    assert "pa#ss" not in str(error.value) and "w?rd" not in str(error.value)
    assert "***@cache" in str(error.value)
    assert "pa#ss" not in redact(url)


def test_a_database_that_is_not_a_number_is_refused_not_read_as_zero():
    with pytest.raises(ValueError, match="not a whole number"):
        _ = RedisDestination(database="two").db
    assert RedisDestination.from_url("redis://h:1/7").db == 7


def test_a_malformed_url_fails_the_run_and_no_event_shows_the_password(pipeline_resources, capfd):
    resources = {**pipeline_resources, "redis": RedisResource(url=f"redis//:{SECRET}@cache/0")}
    result = defs.resolve_job_def("warehouse_actions_job").execute_in_process(
        resources=resources, raise_on_error=False
    )
    assert not result.success
    failure = result.failure_data_for_node("redis_user_profiles")
    assert failure is not None and "must start with redis://" in str(failure.error)
    events = "\n".join(repr(event) for event in result.all_events)
    captured = capfd.readouterr()
    for text in (events, captured.out, captured.err):
        assert "pa#ss" not in text and "w?rd" not in text


def test_the_read_back_check_and_preview_use_the_socket_timeout(redis_url):
    client = RedisResource(url=redis_url, socket_timeout=3).get_client()
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 3
    assert isinstance(client, redis.Redis)
    client.close()
