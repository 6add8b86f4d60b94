"""Trait sources: one module each, and user_profiles joins them all.

A module here defines a `TraitSource` (personalization_pipeline/traits.py), and, when the table
is new, the asset that builds it and the checks on its traits. Nothing else needs to change:
user_profiles joins the source, its checks block the sync, redis_user_profiles carries its traits
and the graph shows it upstream of user_profiles. See the README, "Extending the pipeline".
"""
