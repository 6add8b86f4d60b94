"""What the benchmark scripts share: a free loopback port and a throwaway redis-server.

A package rather than a script, so `make bench` (which runs every `benchmarks/*.py`) skips it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from personalization_pipeline.cli import redis_server_command

__all__ = ["free_port", "start_redis"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(directory: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    """A loopback redis-server keeping nothing on disk, answering PING; (process, port)."""
    port = free_port()
    binary = shutil.which("redis-server") or "redis-server"
    process = subprocess.Popen(
        [*redis_server_command(binary, port, directory), *extra], stdout=subprocess.DEVNULL
    )
    client = redis.Redis(port=port)
    try:
        for _ in range(500):
            try:
                client.ping()
                return process, port
            except redis.ConnectionError:
                time.sleep(0.02)
    finally:
        client.close()
    process.kill()
    raise SystemExit(f"redis-server on port {port} did not start")
