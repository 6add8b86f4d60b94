"""Event gateway benchmark: sustained events/s into a throwaway redis-server, on loopback.

Measures, for each ASGI server (uvicorn, granian) with the same worker count:

1. a same-run baseline: a plain Starlette handler that only XADDs each event (one pipeline
   per request), fed the same 100-event batches;
2. the gateway's ``/v1/batch`` with 100 events per request and every Redis effect applied
   (stream append, identify hashes, purchase logs), and its ratio to (1);
3. the gateway with one event per request (``/v1/track``);
4. p50/p99 from POST to the purchase being readable in Redis (HGET of
   ``recent_five_purchases.purchase_1``), while batches arrive at half the rate of (2).

The load generator is one asyncio process writing pre-encoded requests (each request gets
fresh messageIds by one bytes.replace) on keep-alive connections. Every run is bounded in
time; after each, the events in the streams are compared with the events acknowledged.

    .venv/bin/python benchmarks/ingest.py [--workers 2] [--clients 16] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import orjson
import redis
from harness import free_port, start_redis

from personalization_pipeline.keys import event_stream_keys

WRITE_KEY = "bench-write-key"
TOKEN = b"@@@@@@@@@@@@"  # replaced per request, so every request carries fresh messageIds
USERS = 100_000
BATCH = 100
SHARDS = 4


# --- the baseline: a plain Starlette handler that only XADDs each event -------------------


def baseline_app():  # a factory for uvicorn/granian --factory
    import redis.asyncio as aioredis
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    client = aioredis.Redis.from_url(os.environ["REDIS_URL"])

    async def batch(request: Request) -> Response:
        events = orjson.loads(await request.body())["batch"]
        async with client.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd("events:baseline", {"e": orjson.dumps(event)}, maxlen=1_000_000)
            await pipe.execute()
        return Response(b"ok", media_type="text/plain; charset=utf-8")

    return Starlette(routes=[Route("/v1/batch", batch, methods=["POST"])])


# --- request bodies ---------------------------------------------------------------------


def event(rng: random.Random, index: int) -> dict:
    """One event of a realistic mix: 10% identify, 10% purchases, 40% track, 40% page."""
    user = f"u{rng.randrange(USERS)}"
    stamp = f"2026-05-01T12:{rng.randrange(60):02d}:{rng.randrange(60):02d}.{index:06d}+00:00"
    base = {
        "userId": user,
        "anonymousId": None,
        "messageId": TOKEN.decode() + f"-{index:03d}",
        "timestamp": stamp,
        "context": {"library": {"name": "analytics-python", "version": "2.1.9"}},
        "integrations": {"All": True},
        "channel": "server",
    }
    kind = index % 10
    if kind == 0:
        traits = {"email": f"{user}@example.com", "plan": {"tier": "gold", "seats": 5}}
        base["context"]["traits"] = traits | {"score": rng.random()}
        return {"type": "identify", **base}
    if kind == 1:
        products = [{"sku": f"SKU-{rng.randrange(5000)}", "price": 9.5} for _ in range(2)]
        props = {"order_id": f"o{index}", "products": products}
        return {"type": "track", "event": "Order Completed", "properties": props, **base}
    if kind < 6:
        props = {"sku": f"SKU-{rng.randrange(5000)}", "price": 19.99}
        return {"type": "track", "event": "Product Viewed", "properties": props, **base}
    return {"type": "page", "name": "Home", "properties": {"path": "/"}, **base}


def request_bytes(path: str, body: bytes) -> bytes:
    auth = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def batch_requests(count: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [
        request_bytes("/v1/batch", orjson.dumps({"batch": [event(rng, i) for i in range(BATCH)]}))
        for _ in range(count)
    ]


def single_requests(count: int, seed: int = 2) -> list[bytes]:
    rng = random.Random(seed)
    requests = []
    for i in range(count):
        one = event(rng, 1 + 4 * (i % 2))  # purchases and plain tracks, alternating
        requests.append(request_bytes("/v1/track", orjson.dumps(one)))
    return requests


# --- the load generator -----------------------------------------------------------------


async def send(reader, writer, request: bytes) -> bytes:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return head[9:12]


async def client(
    port: int, requests: list[bytes], seq: int, stop: float, stats: dict, interval: float = 0.0
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    due = time.monotonic()
    n = 0
    while time.monotonic() < stop:
        request = requests[n % len(requests)].replace(TOKEN, b"%03d%09d" % (seq, n))
        n += 1
        if interval:
            due += interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        status = await send(reader, writer, request)
        stats["acked"] += status == b"200"
        if time.monotonic() >= stats["from"]:
            stats["ok" if status == b"200" else "failed"] += 1
    writer.close()


async def probe(port: int, redis_port: int, stop: float, latencies: list[float]) -> None:
    """Purchases of fresh users; time from POST until HGET sees the SKU."""
    import redis.asyncio as aioredis

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    store = aioredis.Redis(port=redis_port)
    n = 0
    while time.monotonic() < stop:
        n += 1
        user, sku = f"probe{n}", f"PROBE-{n}"
        body = {"userId": user, "event": "Order Completed", "properties": {"sku": sku}}
        request = request_bytes("/v1/track", orjson.dumps(body))
        started = time.perf_counter()
        sending = asyncio.ensure_future(send(reader, writer, request))
        while await store.hget(f"user:{user}", "recent_five_purchases.purchase_1") is None:
            pass
        latencies.append(time.perf_counter() - started)
        await sending
        await asyncio.sleep(0.02)
    await store.aclose()
    writer.close()


def load(
    port: int,
    requests: list[bytes],
    clients: int,
    seconds: float,
    per_request: int,
    rate: float = 0.0,
    redis_port: int = 0,
) -> tuple[float, list[float], int, int]:
    """Events/s acknowledged over `seconds` after a 1 s warm-up, probe latencies (if rate),
    failed requests, and all events acknowledged (warm-up included)."""

    async def main() -> tuple[dict, list[float]]:
        now = time.monotonic()
        stats = {"ok": 0, "failed": 0, "acked": 0, "from": now + 1.0}
        stop = now + 1.0 + seconds
        interval = clients * per_request / rate if rate else 0.0
        latencies: list[float] = []
        tasks = [client(port, requests, i, stop, stats, interval) for i in range(clients)]
        if rate:
            tasks.append(probe(port, redis_port, stop, latencies))
        await asyncio.gather(*tasks)
        return stats, latencies

    stats, latencies = asyncio.run(main())
    acked = stats["acked"] * per_request
    return stats["ok"] * per_request / seconds, latencies, stats["failed"], acked


# --- servers ----------------------------------------------------------------------------


def wait_for_port(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port} after 30 s")


def server_command(server: str, target: str, port: int, workers: int) -> list[str]:
    bin_dir = Path(sys.executable).parent
    if server == "uvicorn":
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            target,
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    return [
        str(bin_dir / "granian"),
        "--interface",
        "asgi",
        "--factory",
        target,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "1",
        "--no-ws",
        "--log-level",
        "warning",
    ]


@contextmanager
def serving(server: str, target: str, workers: int, redis_url: str):
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "EVENTS_WRITE_KEYS": WRITE_KEY,
        "EVENTS_STREAM_SHARDS": str(SHARDS),
        "PYTHONPATH": str(Path(__file__).resolve().parent),
    }
    process = subprocess.Popen(server_command(server, target, port, workers), env=env)
    try:
        wait_for_port(port, process)
        time.sleep(1.0)  # every worker up
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(15)


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / tick
    return own + sum(tree_cpu(int(child)) for child in children)


def stored_events(client: redis.Redis) -> int:
    keys = [*event_stream_keys(SHARDS), "events:baseline"]
    return sum(client.xlen(key) for key in keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--servers", default="uvicorn,granian")
    args = parser.parse_args()

    batches = batch_requests(200)
    singles = single_requests(2000)
    with tempfile.TemporaryDirectory() as directory:
        store, redis_port = start_redis(Path(directory))
        client = redis.Redis(port=redis_port)
        url = f"redis://127.0.0.1:{redis_port}/0"
        print(
            f"{os.cpu_count()} CPUs; {args.workers} workers, {args.clients} clients, "
            f"{args.seconds:.0f} s per run; events/s acknowledged (stored/acked checked)"
        )

        def run(
            label: str, server: str, target: str, requests: list[bytes], per: int, rate: float = 0.0
        ) -> tuple[float, list[float]]:
            client.flushall()
            with serving(server, target, args.workers, url) as (port, pid):
                cpu_before = tree_cpu(pid), tree_cpu(store.pid), time.process_time()
                rate_s, latencies, failed, acked = load(
                    port, requests, args.clients, args.seconds, per, rate, redis_port
                )
                cpu = [
                    after - before
                    for before, after in zip(
                        cpu_before,
                        (tree_cpu(pid), tree_cpu(store.pid), time.process_time()),
                        strict=True,
                    )
                ]
            stored = stored_events(client) - len(latencies)
            per_event = [seconds * 1e6 / max(acked, 1) for seconds in cpu]
            capacity = (os.cpu_count() or 1) * 1e6 / sum(per_event)
            print(
                f"  {label:<44} {rate_s:>9,.0f} events/s  failed requests {failed}, "
                f"stored/acked {stored:,}/{acked:,}\n"
                f"  {'':<44} CPU per event: server {per_event[0]:.1f} us, redis "
                f"{per_event[1]:.1f} us, load generator {per_event[2]:.1f} us -> "
                f"{os.cpu_count()} dedicated cores would carry {capacity:,.0f} events/s"
            )
            return rate_s, latencies

        results = {}
        for server in args.servers.split(","):
            print(f"{server}:")
            base, _ = run(
                "baseline: XADD-only handler, /v1/batch x100",
                server,
                "ingest:baseline_app",
                batches,
                BATCH,
            )
            gate, _ = run(
                "gateway /v1/batch x100, all effects",
                server,
                "personalization_pipeline.events.app:create_app",
                batches,
                BATCH,
            )
            single, _ = run(
                "gateway /v1/track, one event per request",
                server,
                "personalization_pipeline.events.app:create_app",
                singles,
                1,
            )
            print(f"  gateway / baseline = {gate / base:.2f}")
            results[server] = (base, gate, single)
        best = max(results, key=lambda s: results[s][1])
        half = results[best][1] / 2
        _, latencies = run(
            f"{best}: latency at half rate ({half:,.0f} ev/s)",
            best,
            "personalization_pipeline.events.app:create_app",
            batches,
            BATCH,
            half,
        )
        if latencies:
            cuts = statistics.quantiles(latencies, n=100)
            print(
                f"  POST -> purchase readable in Redis: p50 {cuts[49] * 1e3:.2f} ms, "
                f"p99 {cuts[98] * 1e3:.2f} ms over {len(latencies)} probes"
            )
        store.terminate()
        store.wait(10)


if __name__ == "__main__":
    main()
