"""Redis memory per synced profile, for sizing: 100,000 profiles of the sample's shape.

The 1,000 sample profiles (data/sample, joined as user_profiles joins them)
are repeated with new user ids (U0000001 ...) and emails (maya.jensen.1.37@example.com) until
``--rows``, synced with the profile sync's own spec into a throwaway redis-server (a plain one
and a one-node Redis Cluster, which keeps a slot index per key). Prints used_memory growth per
profile (INFO memory), the mean MEMORY USAGE of 1,000 profile keys, and the ratio of the
former to the bytes of the profile itself (key + field names + values) measured in the same run.

    .venv/bin/python benchmarks/redis_memory.py [--rows N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb
import redis

# benchmarks/ is this script's directory, hence on sys.path: share sync.py's server start-up.
from harness import start_redis

from assets.activation import PROFILE_SYNC
from personalization_pipeline.sync.engine import sync_table
from personalization_pipeline.sync.redis_config import RedisDestination, connect

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


def profiles(con: duckdb.DuckDBPyConnection, rows: int) -> None:
    con.execute("CREATE SCHEMA analytics")
    con.execute(
        f"""
        CREATE TABLE analytics.user_profiles AS
        WITH sample AS (
            SELECT c.Email AS email, c.Membership_Status__c AS membership_status,
                i.income_bracket, row_number() OVER () - 1 AS n
            FROM read_csv('{SAMPLE / "salesforce_contacts.csv"}', all_varchar = true) c
            LEFT JOIN read_csv('{SAMPLE / "income_enrichment.csv"}', all_varchar = true) i
                ON lower(c.Email) = lower(i.email)
            WHERE c.IsDeleted = 'false' AND coalesce(trim(c.App_User_Id__c), '') <> ''
        )
        SELECT 'U' || lpad(CAST(copy * (SELECT count(*) FROM sample) + n + 1 AS VARCHAR), 7, '0')
                AS user_id,
            replace(email, '@', '.' || copy || '@') AS email, membership_status, income_bracket
        FROM sample, range(CAST(ceil({rows} / (SELECT count(*) FROM sample)) AS BIGINT)) t(copy)
        ORDER BY copy, n
        LIMIT {rows}
        """
    )


def payload_bytes(con: duckdb.DuckDBPyConnection) -> float:
    """Mean bytes of what a profile holds: key, field names and values of non-null fields."""
    terms = " + ".join(
        f"CASE WHEN {f} IS NULL THEN 0 ELSE {len(f)} + strlen({f}) END" for f in PROFILE_SYNC.fields
    )
    return con.execute(
        f"SELECT avg(strlen('user:' || user_id) + {terms}) FROM analytics.user_profiles"
    ).fetchone()[0]


def measure(con: duckdb.DuckDBPyConnection, port: int, cluster: bool) -> tuple[float, float]:
    admin = redis.Redis(port=port)
    if cluster:
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        while admin.cluster("info")["cluster_state"] != "ok":
            time.sleep(0.1)
    before = admin.info("memory")["used_memory"]
    client = connect(RedisDestination(address=f"127.0.0.1:{port}", cluster_mode=cluster))
    result = sync_table(con, client, PROFILE_SYNC)
    client.close()
    grown = admin.info("memory")["used_memory"] - before
    keys = [
        f"user:{user_id}"
        for (user_id,) in con.execute(
            "SELECT user_id FROM analytics.user_profiles USING SAMPLE reservoir(1000 ROWS)"
        ).fetchall()
    ]
    usage = sum(admin.memory_usage(key, samples=0) for key in keys) / len(keys)
    con.execute("DROP SCHEMA sync CASCADE")
    return grown / result.rows_written, usage


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect(str(Path(tmp) / "bench.duckdb"))
        profiles(con, args.rows)
        payload = payload_bytes(con)
        print(f"profiles: {args.rows:,} of the sample's shape; payload {payload:.1f} bytes each")
        for name, extra in (
            ("redis-server", ()),
            ("Redis Cluster node", ("--cluster-enabled", "yes")),
        ):
            directory = Path(tmp) / name.replace(" ", "-")
            directory.mkdir()
            process, port = start_redis(directory, *extra)
            try:
                per_profile, usage = measure(con, port, cluster=bool(extra))
            finally:
                process.terminate()
                process.wait(10)
            print(
                f"{name}: used_memory +{per_profile:.0f} bytes per profile"
                f" ({per_profile / payload:.2f}x the payload); MEMORY USAGE {usage:.0f} bytes"
            )


if __name__ == "__main__":
    main()
