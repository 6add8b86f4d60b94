"""Salesforce Contact extraction: plain Python, no Dagster (the resource and asset wrap it)."""
