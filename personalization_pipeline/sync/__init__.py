"""Warehouse to Redis sync engine: identify encoding, diff, writer. Plain Python, no Dagster."""
