"""Support for tests and benchmarks (a local Salesforce-compatible server); not used by the
pipeline itself."""
