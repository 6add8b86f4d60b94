"""The event gateway under a real uvicorn server in a thread, and a raw HTTP client for it."""

from __future__ import annotations

import base64
import http.client
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from personalization_pipeline.events.app import create_app
from personalization_pipeline.events.config import GatewaySettings
from tests.conftest import free_port

WRITE_KEY = "test-write-key"


@contextmanager
def running_gateway(settings: GatewaySettings) -> Iterator[str]:
    """The app served on a free loopback port; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def post(
    url: str, path: str, body: bytes, headers: dict[str, str] | None = None, auth: bool = True
) -> tuple[int, bytes, dict[str, str]]:
    """POST raw bytes; returns status, body and lower-cased headers."""
    all_headers = {"Content-Type": "application/json"}
    if auth:
        all_headers["Authorization"] = basic(WRITE_KEY)
    all_headers.update(headers or {})
    return request(url, "POST", path, body, all_headers)


def request(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, bytes, dict[str, str]]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()
