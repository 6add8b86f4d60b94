"""The last-mile read path: personalize() from Redis (no Dagster)."""
