"""personalize() benchmark: latency in process and over HTTP, beside a naive reader.

A throwaway redis-server is loaded (pipelined) with 10,000 SKUs of 20 neighbours each, the
popular lists and 100,000 users: 80% with five recent purchases and a purchase log, a mix of
memberships and income brackets. Then, in one run:

1. in process: personalize() (two pipelined round trips) and the same logic reading one key
   per call, in sequence (the naive baseline), interleaved for the same random users after a
   warm-up; wall time and this thread's CPU time per call;
2. over HTTP: GET /v1/personalize on the serve app (granian, 2 workers) at a fixed rate from
   20 keep-alive connections (uvloop), after a warm-up of every worker; latency measured from
   each request's scheduled time (so a stalled server is not hidden), beside GET /health at
   the same rate; CPU per request of the server, Redis and the load generator.

p50/p99 are the 50th/99th of 100 quantiles of all samples (statistics.quantiles, inclusive).
The machine is shared: each phase prints the load average and how many cores other processes
used meanwhile, and the CPU figures say what the code costs whatever the load.

    .venv/bin/python benchmarks/personalize.py [--calls 20000] [--seconds 10] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import redis
import uvloop

# This checkout's code, here and in the server, before any installed copy of the package.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from harness import free_port, start_redis  # noqa: E402
from ingest import server_command, tree_cpu, wait_for_port  # noqa: E402

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


def ms(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) of seconds, in milliseconds."""
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


@contextmanager
def phase(pids: list[int]) -> Iterator[dict[str, float]]:
    """What the machine did meanwhile: load average, CPU seconds of ``pids`` (and their
    children), of this process and of every other process; filled in on exit."""
    usage: dict[str, float] = {}
    started = time.perf_counter(), psutil.cpu_times(), [tree_cpu(pid) for pid in pids]
    own = time.process_time()
    yield usage
    seconds = time.perf_counter() - started[0]
    machine = psutil.cpu_times()
    busy = sum(machine) - machine.idle - machine.iowait
    busy -= sum(started[1]) - started[1].idle - started[1].iowait
    ours = [tree_cpu(pid) - before for pid, before in zip(pids, started[2], strict=True)]
    usage |= {"seconds": seconds, "load": os.getloadavg()[0], "own": time.process_time() - own}
    usage |= {"pids": ours, "others": max(0.0, busy - usage["own"] - sum(ours))}


def describe(usage: dict[str, float]) -> str:
    cores = usage["others"] / usage["seconds"]
    return (
        f"load average {usage['load']:.1f}; other processes used {cores:.2f} of "
        f"{os.cpu_count()} cores meanwhile"
    )


def in_process(client: redis.Redis, calls: int, rng: random.Random) -> dict[str, dict]:
    arms: dict[str, Callable] = {"personalize": serving.personalize, "naive": naive}
    for _ in range(1000):  # warm-up: connections, decoded members, the interpreter's caches
        user = f"U{rng.randrange(USERS)}"
        for call in arms.values():
            call(client, user)
    users = [f"U{rng.randrange(USERS)}" for _ in range(calls)]
    wall: dict[str, list[float]] = {name: [] for name in arms}
    cpu: dict[str, list[float]] = {name: [] for name in arms}
    pauses: list[float] = []

    def collected(stage: str, _info: dict) -> None:
        if stage == "start":
            pauses.append(time.perf_counter())
        else:
            pauses[-1] = time.perf_counter() - pauses[-1]

    gc.callbacks.append(collected)
    try:
        for user in users:  # interleaved, so both see the same load on a shared machine
            for name, call in arms.items():
                started, used = time.perf_counter(), time.thread_time()
                call(client, user)
                cpu[name].append(time.thread_time() - used)
                wall[name].append(time.perf_counter() - started)
    finally:
        gc.callbacks.remove(collected)
    return {"wall": wall, "cpu": cpu, "pauses": pauses}


async def http_load(
    port: int, path_for: Callable[[], str], rate: float, seconds: float, connections: int = 20
) -> tuple[list[float], int]:
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
                f"{time.perf_counter() - started:.1f} s; {os.cpu_count()} CPUs"
            )
            with phase([store.pid]) as usage:
                measured = in_process(client, args.calls, rng)
            report_in_process(measured, args.calls, usage)
            http(port, store.pid, args, rng)
        finally:
            store.terminate()
            store.wait(10)


def report_in_process(measured: dict, calls: int, usage: dict[str, float]) -> None:
    (p50, p99), (n50, n99) = (ms(measured["wall"][k]) for k in ("personalize", "naive"))
    (c50, c99), (d50, d99) = (ms(measured["cpu"][k]) for k in ("personalize", "naive"))
    pauses = measured["pauses"]
    print(
        f"in process, {calls:,} calls each ({describe(usage)}):\n"
        f"  {'':<38} wall p50   wall p99 | CPU p50   CPU p99\n"
        f"  {'personalize() (2 round trips)':<38} {p50:5.3f} ms {p99:7.3f} ms | "
        f"{c50:5.3f} ms {c99:6.3f} ms\n"
        f"  {'naive (one call per key, in sequence)':<38} {n50:5.3f} ms {n99:7.3f} ms | "
        f"{d50:5.3f} ms {d99:6.3f} ms\n"
        f"  naive / personalize: wall p50 {n50 / p50:.2f}x, p99 {n99 / p99:.2f}x; "
        f"CPU p50 {d50 / c50:.2f}x\n"
        f"  garbage collections meanwhile: {len(pauses)}, longest "
        f"{max(pauses, default=0.0) * 1000:.2f} ms"
    )


def http(redis_port: int, redis_pid: int, args: argparse.Namespace, rng: random.Random) -> None:
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

        def personalized() -> str:
            return f"/v1/personalize/U{rng.randrange(USERS)}"

        # Warm-up: every worker imported, connected to Redis, its members decoded. Without it
        # the first second's stalls alone are more than 1% of the samples.
        uvloop.run(http_load(port, personalized, args.rate, 3.0))
        print(
            f"over HTTP (granian, 2 workers), {args.rate:,.0f} requests/s for {args.seconds} s "
            "after a 3 s warm-up:"
        )
        runs = {}
        for label, path_for in (
            ("GET /health (PING; baseline)", lambda: "/health"),
            ("GET /v1/personalize/{userId}", personalized),
        ):
            with phase([server.pid, redis_pid]) as usage:
                latencies, failures = uvloop.run(http_load(port, path_for, args.rate, args.seconds))
            p50, p99 = ms(latencies)
            served = max(len(latencies), 1)
            per = [seconds * 1e6 / served for seconds in (*usage["pids"], usage["own"])]
            print(
                f"  {label:<30} {len(latencies) / args.seconds:6,.0f} req/s  p50 {p50:6.2f} ms"
                f"  p99 {p99:7.2f} ms  non-200: {failures}\n"
                f"  {'':<30} CPU per request: server {per[0]:.0f} us, Redis {per[1]:.0f} us, "
                f"load generator {per[2]:.0f} us; {describe(usage)}"
            )
            runs[label] = (p50, p99)
        (h50, h99), (p50, p99) = runs.values()
        print(f"  personalize / health: p50 {p50 / h50:.2f}x, p99 {p99 / h99:.2f}x")
    finally:
        server.terminate()
        server.wait(15)


if __name__ == "__main__":
    main()
