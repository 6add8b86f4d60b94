"""The real-time half: a RudderStack-compatible event gateway (no Dagster here)."""
