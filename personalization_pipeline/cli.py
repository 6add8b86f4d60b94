"""`personalization`: the commands behind `make demo`, `make dev` and `make serve`, and
crash recovery."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from personalization_pipeline.resources.redis import redact
from personalization_pipeline.settings import current
from personalization_pipeline.sync.redis_config import RedisDestination, RedisUnavailable, connect

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCAL_DAGSTER_HOME = PROJECT_ROOT / ".dagster_home"
EXAMPLE_USERS = ["U000001", "U000002"]


def dagster_home() -> Path:
    """DAGSTER_HOME if the user set one; otherwise .dagster_home/ seeded from the template."""
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    LOCAL_DAGSTER_HOME.mkdir(exist_ok=True)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", LOCAL_DAGSTER_HOME / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(LOCAL_DAGSTER_HOME)
    return LOCAL_DAGSTER_HOME


def redis_answers(destination: RedisDestination) -> bool:
    try:
        connect(destination).close()
    except RedisUnavailable:
        return False
    return True


def ensure_redis(url: str) -> None:
    """Use the Redis at `url`; if nothing answers on a local address, start a throwaway one."""
    destination = RedisDestination.from_url(url, socket_timeout=2)
    if redis_answers(destination):
        return
    host, port = destination.nodes[0]
    server = shutil.which("redis-server")
    if host not in ("127.0.0.1", "localhost") or server is None:
        sys.exit(
            f"No Redis answers at {redact(url)}. Install Redis (apt-get install redis-server, "
            "brew install redis) or set REDIS_URL to a reachable Redis."
        )
    state = PROJECT_ROOT / ".redis"
    state.mkdir(exist_ok=True)
    command = redis_server_command(server, port, state)
    command += ["--daemonize", "yes", "--pidfile", str(state / "redis.pid")]
    subprocess.run([*command, "--logfile", str(state / "redis.log")], check=True)
    deadline = time.monotonic() + 10
    while not redis_answers(destination):
        if time.monotonic() > deadline:
            sys.exit(
                f"Started redis-server on port {port} but it does not answer; see .redis/redis.log"
            )
        time.sleep(0.05)
    print(f"Started a local redis-server on port {port} (stop it: redis-cli -p {port} shutdown)")


def redis_server_command(server: str, port: int | str, directory: Path) -> list[str]:
    """A redis-server that listens on loopback only and keeps nothing on disk."""
    return [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(directory)]  # fmt: skip


def demo() -> None:
    import dagster as dg

    url = current().redis.url
    try:
        ensure_redis(url)
    except ValueError as error:  # a malformed REDIS_URL; the message is redacted
        sys.exit(str(error))
    dagster_home()
    from personalization_pipeline import demo_checkouts
    from personalization_pipeline.definitions import defs
    from personalization_pipeline.run_workers import in_process_worker_tags
    from personalization_pipeline.sync.identify import user_key

    prefix = current().redis.prefix
    run_ids = {}
    with dg.DagsterInstance.get() as instance:

        def run(job_name: str) -> None:
            # An incremental sync: if the demo's Redis was restarted since the last demo (it
            # keeps nothing on disk), each sync notices its lost epoch marker and rewrites all.
            result = defs.resolve_job_def(job_name).execute_in_process(
                instance=instance,
                raise_on_error=False,
                # If this process is killed mid-run, the daemon or free-stuck-runs can tell.
                tags=in_process_worker_tags(),
                run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
            )
            if not result.success:
                sys.exit(f"{job_name} failed; the error is above (and in `make dev`, Runs).")
            run_ids[job_name] = result.run_id

        run("warehouse_actions_job")
        orders_path = current().recommendations.orders_path
        orders = demo_checkouts.latest_orders(orders_path, EXAMPLE_USERS)
        demo_checkouts.check_out(orders)
        run("events_job")
        run("recommendations_job")
    client = connect(url)
    profiles_run = run_ids["warehouse_actions_job"]
    print(f"\nwarehouse_actions_job succeeded (run {profiles_run}). Redis now holds:")
    for user in EXAMPLE_USERS:
        key = user_key(user, prefix)
        fields = client.hgetall(key)
        print(f"  HGETALL {key}")
        for name, value in sorted(fields.items()):
            print(f"    {name.decode()} = {value.decode()}")
    print(
        "\nEach example user checked out their latest sample order again, through the gateway's "
        "intake path ("
        + "; ".join(f"{u}: {', '.join(o['skus'])}" for u, o in orders.items())
        + "); events_job drained it into raw.events and recommendations_job "
        f"(run {run_ids['recommendations_job']}) rebuilt the model and synced it to Redis."
    )
    demo_checkouts.print_recommendations(client, EXAMPLE_USERS, prefix)
    print("\nSee the runs and the lineage in the UI: make dev, then http://127.0.0.1:3000")


def dev(port: int) -> None:
    dagster_home()
    dagster = Path(sys.executable).parent / "dagster"
    os.chdir(PROJECT_ROOT)
    os.execv(
        dagster, [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    )


def serve(host: str, port: int, workers: int) -> None:
    """The event gateway on granian (ASGI), `workers` processes sharing only Redis."""
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.server import Server

    from personalization_pipeline.events.config import GatewaySettings
    from personalization_pipeline.sync.redis_config import RedisUnavailable, connect

    try:
        settings = GatewaySettings.from_settings(current())
    except ValueError as error:
        sys.exit(f"personalization serve refused to start: {error}")
    where = settings.destination.display_url()
    try:
        connect(settings.destination).close()
    except RedisUnavailable as error:
        print(f"Warning: {error}. Until then every request is answered 503 (SDKs retry).")
    print(
        f"Event gateway on http://{host}:{port} ({workers} workers), storing into {where}; "
        f"{len(settings.write_keys)} write key(s) accepted"
    )
    Server(
        "personalization_pipeline.events.app:create_app",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        factory=True,
        workers=workers,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,
    ).serve()


def free_stuck_runs() -> None:
    """Fail runs whose worker is gone and free the pool slots of finished runs, once."""
    import dagster as dg

    from personalization_pipeline import run_workers

    dagster_home()
    with dg.DagsterInstance.get() as instance:
        stuck = run_workers.free_stuck_runs(instance)
    for run_id, reason in stuck.failed.items():
        print(f"Failed run {run_id}: {reason}")
    for run_id in stuck.freed:
        print(f"Freed the pool slots of finished run {run_id}")
    for run_id, reason in stuck.unchecked.items():
        print(
            f"Left run {run_id} alone ({reason}). If its worker is dead, terminate it in the UI "
            "(Runs -> Terminate -> force termination) and run this command again."
        )
    if not (stuck.failed or stuck.freed or stuck.unchecked):
        print(
            "No stuck runs: every started run has a live worker, and no finished run holds a slot."
        )


def show_settings() -> None:
    """Every variable and the value in effect (secrets masked); a malformed one says why."""
    from personalization_pipeline.settings import Settings

    try:
        listing = Settings.from_env().listing()
    except ValueError as error:
        sys.exit(f"Settings refused: {error}")
    width = max(len(variable) for variable, _ in listing)
    for variable, value in listing:
        print(f"{variable:<{width}}  {value}")


def graph(write_readme: bool) -> None:
    from personalization_pipeline import graph_picture
    from personalization_pipeline.definitions import defs

    if not write_readme:
        print(graph_picture.mermaid(defs), end="")
        return
    changed = graph_picture.write_readme(PROJECT_ROOT / "README.md", defs)
    print("README.md's asset graph " + ("updated" if changed else "was already current"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="personalization", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "demo",
        help="run the profile and recommendation pipelines on the sample data and show Redis",
    )
    dev_parser = commands.add_parser("dev", help="start the Dagster UI, daemon and sensors")
    dev_parser.add_argument("--port", type=int, default=3000)
    serve_parser = commands.add_parser(
        "serve", help="start the RudderStack-compatible event gateway (needs EVENTS_WRITE_KEYS)"
    )
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8080)
    serve_parser.add_argument("--workers", type=int, default=1)
    commands.add_parser(
        "free-stuck-runs",
        help="fail runs whose worker was killed and free their pool slots (when no daemon runs)",
    )
    commands.add_parser("settings", help="print every setting in effect (secrets masked)")
    graph_parser = commands.add_parser("graph", help="print the asset graph (Mermaid)")
    graph_parser.add_argument(
        "--write-readme", action="store_true", help="refresh the picture in README.md"
    )
    args = parser.parse_args(argv)
    if args.command == "settings":
        show_settings()
    elif args.command == "graph":
        graph(args.write_readme)
    elif args.command == "demo":
        demo()
    elif args.command == "serve":
        serve(args.host, args.port, args.workers)
    elif args.command == "free-stuck-runs":
        free_stuck_runs()
    else:
        dev(args.port)


if __name__ == "__main__":
    main()
