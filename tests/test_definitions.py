"""The code location loads, in process and the way `dagster dev` loads it."""

import subprocess
import sys
from pathlib import Path

import dagster as dg

from personalization_pipeline.definitions import defs
from tests.conftest import REPO_ROOT

PROFILE_ASSETS = {
    "salesforce_contacts",
    "income_enrichment",
    "user_profiles",
    "redis_user_profiles",
}


def test_definitions_are_loadable():
    dg.Definitions.validate_loadable(defs)


def test_profile_path_assets_groups_and_lineage():
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys >= PROFILE_ASSETS
    groups = {key: graph.get(dg.AssetKey(key)).group_name for key in PROFILE_ASSETS}
    assert groups == {
        "salesforce_contacts": "sources",
        "income_enrichment": "sources",
        "user_profiles": "warehouse",
        "redis_user_profiles": "activation",
    }
    parents = {
        key: {p.to_user_string() for p in graph.get(dg.AssetKey(key)).parent_keys}
        for key in ("user_profiles", "redis_user_profiles")
    }
    assert parents == {
        "user_profiles": {"salesforce_contacts", "income_enrichment", "raw_events"},
        "redis_user_profiles": {"user_profiles"},
    }
    for key in PROFILE_ASSETS:
        assert graph.get(dg.AssetKey(key)).description, f"{key} needs a one-line docstring"


def test_everything_that_opens_the_warehouse_is_in_the_duckdb_pool():
    definitions = [*defs.assets, *defs.asset_checks]
    users = [d for d in definitions if "warehouse" in d.required_resource_keys]
    assert len(users) == len(definitions) == 19
    assert {d.node_def.name: d.op.pool for d in users} == {d.node_def.name: "duckdb" for d in users}


def test_the_event_drain_is_a_source_with_its_own_job_and_sensor():
    graph = defs.resolve_asset_graph()
    raw_events = graph.get(dg.AssetKey("raw_events"))
    assert raw_events.group_name == "sources"
    assert set(raw_events.kinds) == {"redis", "duckdb"}
    assert raw_events.description
    job = defs.resolve_job_def("events_job")
    assert {key.to_user_string() for key in job.asset_layer.selected_asset_keys} == {"raw_events"}
    assert defs.resolve_sensor_def("events_sensor").job_name == "events_job"


def test_recommendation_lineage_runs_events_to_model_to_redis():
    graph = defs.resolve_asset_graph()

    def parents(key: str) -> set[str]:
        return {p.to_user_string() for p in graph.get(dg.AssetKey(key)).parent_keys}

    assert parents("product_recommendations") == {"raw_events", "products", "orders"}
    assert graph.get(dg.AssetKey("product_recommendations")).group_name == "models"
    for sync in ("redis_products", "redis_product_similarity", "redis_popular_products"):
        assert parents(sync) == {"product_recommendations"}
        assert graph.get(dg.AssetKey(sync)).group_name == "activation"
    job = defs.resolve_job_def("recommendations_job")
    assert {key.to_user_string() for key in job.asset_layer.selected_asset_keys} == {
        "products", "orders", "product_recommendations", "redis_products",
        "redis_product_similarity", "redis_popular_products",
    }  # fmt: skip
    for sensor in ("catalog_files_sensor", "recommendations_after_drain_sensor"):
        assert defs.resolve_sensor_def(sensor).job_name == "recommendations_job"


def test_sensors_never_need_the_warehouse():
    for sensor in defs.sensors:
        assert "warehouse" not in sensor.required_resource_keys, sensor.name


def test_warehouse_actions_job_selects_the_profile_path():
    job = defs.resolve_job_def("warehouse_actions_job")
    assert {key.to_user_string() for key in job.asset_layer.selected_asset_keys} == PROFILE_ASSETS


def test_workspace_validates_with_the_dagster_cli():
    dagster = Path(sys.executable).parent / "dagster"
    completed = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_everything_in_the_ui_explains_itself():
    """Assets, checks, sensors, schedules and every Launchpad config field have a description."""
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert graph.get(key).description, key
        for check in graph.get_check_keys_for_assets({key}):
            assert graph.get_check_spec(check).description, check
    for automation in [*defs.sensors, *defs.schedules]:
        assert automation.description, automation.name
    for assets_def in defs.assets:
        fields = getattr(assets_def.op.config_schema.config_type, "fields", {})
        for name, field in fields.items():
            assert field.description, f"{assets_def.op.name} config field {name}"
