"""Loading sources into the DuckDB warehouse. Plain Python over a DuckDB connection."""
