"""The warehouse schema: versioned migrations bring a file written by older code to the same
shape as a fresh one, and the column specs match what the SQL builds."""

import gzip
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from personalization_pipeline.warehouse.schema import LATEST_VERSION, ensure_schema
from personalization_pipeline.warehouse.tables import LANDED_TABLES

# Written by main at 1fb4c9d, before schema versioning (tests/fixtures/make_old_warehouse.py).
OLD_WAREHOUSE = Path(__file__).parent / "fixtures" / "old_warehouse.duckdb.gz"


def columns(connection: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    return dict(
        connection.execute(f"SELECT column_name, column_type FROM (DESCRIBE {table})").fetchall()
    )


def old_warehouse(tmp_path: Path) -> str:
    path = tmp_path / "old.duckdb"
    path.write_bytes(gzip.decompress(OLD_WAREHOUSE.read_bytes()))
    return str(path)


def test_a_warehouse_written_by_the_previous_main_migrates_to_the_fresh_shape(tmp_path):
    with duckdb.connect(str(tmp_path / "fresh.duckdb")) as fresh:
        ensure_schema(fresh)
        expected = {table.name: columns(fresh, table.name) for table in LANDED_TABLES}
    with duckdb.connect(old_warehouse(tmp_path)) as old:
        (contacts,) = old.execute("SELECT count(*) FROM raw.salesforce_contact").fetchone()
        ensure_schema(old)
        assert {table.name: columns(old, table.name) for table in LANDED_TABLES} == expected
        versions = old.execute("SELECT version FROM meta.schema_version ORDER BY 1").fetchall()
        assert [version for (version,) in versions] == list(range(1, LATEST_VERSION + 1))
        # Its data is still there, and the shared filter reads it.
        assert old.execute("SELECT count(*) FROM raw.salesforce_contact").fetchone() == (contacts,)
        assert contacts == 5
        (live,) = old.execute("SELECT count(*) FROM analytics.live_contacts").fetchone()
        assert 0 < live <= contacts


def test_the_profile_path_runs_on_a_migrated_warehouse(tmp_path, pipeline_resources):
    from personalization_pipeline.definitions import defs
    from personalization_pipeline.resources.warehouse import WarehouseResource

    resources = {**pipeline_resources, "warehouse": WarehouseResource(path=old_warehouse(tmp_path))}
    result = defs.resolve_job_def("warehouse_actions_job").execute_in_process(resources=resources)
    assert result.success
    (profiles,) = result.asset_materializations_for_node("user_profiles")
    assert profiles.metadata["dagster/row_count"].value == 962


def test_migrations_run_once(tmp_path):
    with duckdb.connect(str(tmp_path / "w.duckdb")) as connection:
        ensure_schema(connection)
        ensure_schema(connection)
        (rows,) = connection.execute("SELECT count(*) FROM meta.schema_version").fetchone()
    assert rows == LATEST_VERSION


def test_a_warehouse_newer_than_the_code_is_refused(tmp_path):
    with duckdb.connect(str(tmp_path / "w.duckdb")) as connection:
        ensure_schema(connection)
        connection.execute("INSERT INTO meta.schema_version VALUES (?, 'future', now())", [999])
        with pytest.raises(RuntimeError, match="schema version 999, newer than this code"):
            ensure_schema(connection)


def test_user_profiles_columns_are_what_the_trait_sources_declare(pipeline_resources):
    from assets.warehouse import TRAIT_SOURCES, profile_table
    from personalization_pipeline.definitions import defs

    defs.resolve_job_def("warehouse_actions_job").execute_in_process(resources=pipeline_resources)
    declared = profile_table(TRAIT_SOURCES)
    with duckdb.connect(pipeline_resources["warehouse"].path) as connection:
        built = columns(connection, declared.name)
    assert built == {column.name: column.type for column in declared.columns}


def test_every_table_asset_shows_its_columns():
    from personalization_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    for key in ("salesforce_contacts", "income_enrichment", "raw_events", "user_profiles"):
        schema = graph.get(dg.AssetKey(key)).metadata["dagster/column_schema"]
        assert schema.columns, key


# Written by the previous main (5214b9d, schema version 4): the sample data through
# warehouse_actions_job, so it holds landed tables, the models and the sync's state.
WAREHOUSE_V4 = Path(__file__).parent / "fixtures" / "warehouse_v4.duckdb.gz"


def test_a_warehouse_written_by_the_previous_main_runs_the_current_job(
    tmp_path, pipeline_resources
):
    from personalization_pipeline.definitions import defs
    from personalization_pipeline.resources.warehouse import WarehouseResource

    path = tmp_path / "v4.duckdb"
    path.write_bytes(gzip.decompress(WAREHOUSE_V4.read_bytes()))
    resources = {**pipeline_resources, "warehouse": WarehouseResource(path=str(path))}
    result = defs.resolve_job_def("warehouse_actions_job").execute_in_process(resources=resources)
    assert result.success
    with duckdb.connect(str(path)) as connection:
        (version,) = connection.execute("SELECT max(version) FROM meta.schema_version").fetchone()
        (profiles,) = connection.execute("SELECT count(*) FROM analytics.user_profiles").fetchone()
    assert version == LATEST_VERSION
    assert profiles > 900
