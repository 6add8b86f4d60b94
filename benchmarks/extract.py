"""Contact extraction throughput: 100,000 contacts from the local Salesforce server, REST paging
(2,000 per page) against a Bulk API 2.0 job (50,000 per page), into a fresh DuckDB file each.

Prints rows/s and the peak Python memory (tracemalloc) of each path, and the Bulk/REST ratios.
The local server reports a job InProgress on its first status poll and complete on the second.
Run: .venv/bin/python benchmarks/extract.py [contacts]
"""

from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import duckdb

from personalization_pipeline.resources.salesforce import SalesforceApiSource
from personalization_pipeline.salesforce.client import SalesforceAuth, SalesforceClient
from personalization_pipeline.salesforce.extract import ExtractSettings, extract_contacts
from personalization_pipeline.testing.salesforce_server import SalesforceServer


def measure(
    server: SalesforceServer, directory: Path, mode: str, contacts: int
) -> tuple[float, int]:
    creds = server.org.credentials
    auth = SalesforceAuth(
        username=creds.username, password=creds.password, security_token=creds.security_token
    )
    # Default polling, as in production: the wait for the job is part of a Bulk load's cost.
    settings = ExtractSettings(bulk_threshold=0 if mode == "bulk" else 10**9)
    connection = duckdb.connect(str(directory / f"{mode}.duckdb"))
    client = SalesforceClient(auth, session=server.session())
    tracemalloc.start()
    started = time.perf_counter()
    result = extract_contacts(client, connection, SalesforceApiSource().fields, settings)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    connection.close()
    assert result.mode == mode and result.rows_fetched == contacts, result
    return contacts / elapsed, peak


def main() -> None:
    contacts = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with SalesforceServer() as server, tempfile.TemporaryDirectory() as tmp:
        server.org.insert_many(contacts)
        # The server runs in this process, so its memory (the org, page rendering) is traced
        # too; both paths share that cost.
        rest_rate, rest_peak = measure(server, Path(tmp), "rest", contacts)
        bulk_rate, bulk_peak = measure(server, Path(tmp), "bulk", contacts)
    print(f"contacts: {contacts:,}")
    print(f"REST (pages of 2,000):  {rest_rate:10,.0f} rows/s  peak {rest_peak / 2**20:7.1f} MiB")
    print(f"Bulk 2.0 (50,000/page): {bulk_rate:10,.0f} rows/s  peak {bulk_peak / 2**20:7.1f} MiB")
    print(
        f"Bulk/REST: {bulk_rate / rest_rate:.2f}x rows/s, {bulk_peak / rest_peak:.2f}x peak memory"
    )


if __name__ == "__main__":
    main()
