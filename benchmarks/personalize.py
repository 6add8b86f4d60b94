"""personalize() benchmark: latency in process and over HTTP, beside a naive reader.

A throwaway redis-server is loaded (pipelined) with 10,000 SKUs of 20 neighbours each, the
popular lists and 100,000 users: 80% with five recent purchases and a purchase log, a mix of
memberships and income brackets. Then, in one run:

1. in process: personalize() (two pipelined round trips) and the same logic reading one key
   per call, in sequence (the naive baseline), each called for the same random users;
2. over HTTP: GET /v1/personalize on the serve app (granian, 2 workers) at a fixed
   ~1,000 requests/s from 20 keep-alive connections, latency measured from each request's
   scheduled time (so a stalled server is not hidden), beside GET /health at the same rate.

    .venv/bin/python benchmarks/personalize.py [--calls 20000] [--seconds 10] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

# This checkout's code, here and in the server, before any installed copy of the package.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from harness import free_port, start_redis  # noqa: E402
from ingest import server_command, wait_for_port  # noqa: E402

from personalization_pipeline.events.effects import PURCHASE_FIELD  # noqa: E402
from personalization_pipeline.keys import (  # noqa: E402
    popular_key,
    product_member,
    purchases_key,
    similar_key,
    user_key,
)
from personalization_pipeline.serving import personalize as serving  # noqa: E402

USERS = 100_000
SKUS = 10_000
NEIGHBOURS = 20
CATEGORIES = 40
READ_KEY = "bench-read-key"


def load(client: redis.Redis, rng: random.Random) -> None:
    def member(n: int) -> str:
        return product_member(f"SKU-{n}", f"c{n % CATEGORIES}", 1 + n % 5, n % 10 == 0)

    pipe = client.pipeline(transaction=False)
    for n in range(SKUS):
        near = {member(rng.randrange(SKUS)): rng.random() for _ in range(NEIGHBOURS)}
        pipe.zadd(similar_key(f"SKU-{n}"), near)
        if n % 1000 == 999:
            pipe.execute()
    pipe.zadd(popular_key(), {member(n): SKUS - n for n in range(100)})
    statuses = ["loyalty_member", "expired", "trial", "prospect"]
    for u in range(USERS):
        key = user_key(f"U{u}")
        fields = {"email": f"u{u}@example.com", "membership_status": rng.choice(statuses)}
        if rng.random() < 0.6:
            fields["income_bracket"] = f"level_{rng.randint(1, 5)}"
        if rng.random() < 0.8:
            bought = [f"SKU-{rng.randrange(SKUS)}" for _ in range(12)]
            fields |= {f"{PURCHASE_FIELD}{i}": sku for i, sku in enumerate(bought[:5], 1)}
            log = [[f"{i:018d}", f"m{u}-{i}", sku] for i, sku in enumerate(bought)]
            pipe.set(purchases_key(key), str(log).replace("'", '"'))
        pipe.hset(key, mapping=fields)
        if u % 1000 == 999:
            pipe.execute()
    pipe.execute()


def naive(client: redis.Redis, user_id: str) -> serving.Personalization:
    """The same reads and rules, one Redis call per key, in sequence."""
    plan = serving._plan(user_id, 10, "", None)
    reads = next(plan)
    while True:
        replies = [read(client) for read in reads]
        try:
            reads = plan.send(replies)
        except StopIteration as done:
            return done.value


def percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


def in_process(client: redis.Redis, calls: int, rng: random.Random) -> dict[str, list[float]]:
    users = [f"U{rng.randrange(USERS)}" for _ in range(calls)]
    timings: dict[str, list[float]] = {"personalize": [], "naive": []}
    for user in users:  # interleaved, so both see the same load on a shared machine
        for name, call in (("personalize", serving.personalize), ("naive", naive)):
            started = time.perf_counter()
            call(client, user)
            timings[name].append(time.perf_counter() - started)
    return timings


async def http_load(port: int, path_for, rate: float, seconds: float, connections: int = 20):
    auth = base64.b64encode(f"{READ_KEY}:".encode()).decode()
    latencies: list[float] = []
    failures = 0

    async def connection(offset: float) -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        interval = connections / rate
        due = start + offset
        while due < start + seconds:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            request = f"GET {path_for()} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}"
            writer.write(request.encode() + b"\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line[15:]) for line in head.split(b"\r\n")
                if line[:15].lower() == b"content-length:"
            )  # fmt: skip
            await reader.readexactly(length)
            failures += head[9:12] != b"200"
            latencies.append(time.perf_counter() - due)
            due += interval
        writer.close()

    start = time.perf_counter() + 0.2
    await asyncio.gather(*(connection(i / rate) for i in range(connections)))
    return latencies, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as directory:
        store, port = start_redis(Path(directory))
        try:
            client = redis.Redis(port=port)
            started = time.perf_counter()
            load(client, rng)
            print(
                f"loaded {USERS:,} users, {SKUS:,} SKUs x {NEIGHBOURS} neighbours in "
                f"{time.perf_counter() - started:.1f} s; {os.cpu_count()} CPUs, load average "
                f"{os.getloadavg()[0]:.1f}"
            )
            timings = in_process(client, args.calls, rng)
            (p50, p99), (n50, n99) = (percentiles(timings[k]) for k in ("personalize", "naive"))
            print(
                f"in process, {args.calls:,} calls each:\n"
                f"  personalize() (2 round trips)        p50 {p50:.3f} ms  p99 {p99:.3f} ms\n"
                f"  naive (one call per key, in sequence) p50 {n50:.3f} ms  p99 {n99:.3f} ms\n"
                f"  naive / personalize: p50 {n50 / p50:.2f}x, p99 {n99 / p99:.2f}x"
            )
            http(port, args, rng)
        finally:
            store.terminate()
            store.wait(10)


def http(redis_port: int, args: argparse.Namespace, rng: random.Random) -> None:
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "EVENTS_WRITE_KEYS": "unused",
        "PERSONALIZE_READ_KEYS": READ_KEY,
        "PYTHONPATH": str(ROOT),
    }
    target = "personalization_pipeline.events.app:create_app"
    server = subprocess.Popen(server_command("granian", target, port, 2), env=env)
    try:
        wait_for_port(port, server)
        time.sleep(1.0)
        print(f"over HTTP (granian, 2 workers), {args.rate:,.0f} requests/s for {args.seconds} s:")
        runs = {}
        for label, path_for in (
            ("GET /health (PING; baseline)", lambda: "/health"),
            ("GET /v1/personalize/{userId}", lambda: f"/v1/personalize/U{rng.randrange(USERS)}"),
        ):
            latencies, failures = asyncio.run(http_load(port, path_for, args.rate, args.seconds))
            p50, p99 = percentiles(latencies)
            achieved = len(latencies) / args.seconds
            print(
                f"  {label:<34} {achieved:7,.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
                f"  non-200: {failures}"
            )
            runs[label] = p99
        health, personal = runs.values()
        print(f"  personalize / health p99 = {personal / health:.2f}")
    finally:
        server.terminate()
        server.wait(15)


if __name__ == "__main__":
    main()
