"""A second table reaches Redis from one spec: its asset, read-back check, gate and freshness
come from the factory, and a run is recorded in sync.runs under the Dagster run id."""

import dagster as dg
import duckdb

from personalization_pipeline.resources.redis import RedisResource
from personalization_pipeline.resources.rules import ProfileRulesResource
from personalization_pipeline.resources.warehouse import WarehouseResource
from personalization_pipeline.sync.engine import SyncSpec
from personalization_pipeline.synced_tables import REDIS_FRESHNESS, synced_table


class ChurnConfig(dg.Config):
    worst_score: float = 0.9


@dg.asset(pool="duckdb")
def churn_scores(config: ChurnConfig, warehouse: WarehouseResource) -> None:
    """A model's churn score per user, as a notebook would leave it."""
    with warehouse.connect() as connection:
        connection.execute(
            "CREATE SCHEMA IF NOT EXISTS analytics; CREATE OR REPLACE TABLE analytics.churn AS "
            f"SELECT * FROM (VALUES ('U1', 0.25), ('U2', {config.worst_score})) t(user_id, score)"
        )


@dg.asset_check(asset=churn_scores, blocking=True)
def score_is_a_probability(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connect() as connection:
        (bad,) = connection.execute(
            "SELECT count(*) FROM analytics.churn WHERE score NOT BETWEEN 0 AND 1"
        ).fetchone()
    return dg.AssetCheckResult(passed=bad == 0, metadata={"violations": bad})


churn = synced_table(
    SyncSpec(
        name="churn",
        source="analytics.churn",
        key_column="user_id",
        fields={"score": "churn_score"},
        key_template="churn:{key}",
    ),
    built_by=churn_scores,
    description="Churn scores in Redis as churn:<userId> hashes.",
)


def definitions(tmp_path, redis_url: str) -> dg.Definitions:
    return dg.Definitions(
        assets=[churn_scores, churn.asset],
        asset_checks=[score_is_a_probability, churn.readback],
        jobs=[
            dg.define_asset_job("build_and_sync", selection=[churn_scores, churn.asset]),
            dg.define_asset_job("sync_only", selection=[churn.asset]),
        ],
        resources={
            "warehouse": WarehouseResource(path=str(tmp_path / "warehouse.duckdb")),
            "redis": RedisResource(url=redis_url),
            "rules": ProfileRulesResource(),
        },
    )


def test_one_spec_makes_the_asset_its_readback_check_and_freshness(tmp_path, redis_url):
    graph = definitions(tmp_path, redis_url).resolve_asset_graph()
    node = graph.get(dg.AssetKey("redis_churn"))
    assert node.parent_keys == {churn_scores.key}
    assert node.group_name == "activation" and set(node.kinds) == {"duckdb", "redis"}
    assert node.freshness_policy == REDIS_FRESHNESS
    assert node.description == "Churn scores in Redis as churn:<userId> hashes."
    check = dg.AssetCheckKey(node.key, "readback")
    assert graph.get_check_keys_for_assets({node.key}) == {check}
    assert not graph.get_check_spec(check).blocking


def test_the_second_table_syncs_reads_back_and_is_gated_by_its_source_checks(
    tmp_path, redis_url, redis_client
):
    defs = definitions(tmp_path, redis_url)
    instance = dg.DagsterInstance.ephemeral()
    first = defs.resolve_job_def("build_and_sync").execute_in_process(instance=instance)
    assert first.success
    assert redis_client.hgetall("churn:U1") == {"churn_score": "0.25"}
    (readback,) = [e for e in first.get_asset_check_evaluations() if e.check_name == "readback"]
    assert readback.passed and readback.metadata["sampled"].value == 2
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as connection:
        runs = connection.execute("SELECT sync_name, run_id FROM sync.runs").fetchall()
    assert runs == [("churn", first.run_id)]

    # A build whose blocking check fails: that run's sync is skipped...
    bad = defs.resolve_job_def("build_and_sync").execute_in_process(
        instance=instance,
        run_config={"ops": {"churn_scores": {"config": {"worst_score": 7.0}}}},
        raise_on_error=False,
    )
    assert not bad.success
    assert bad.asset_materializations_for_node("redis_churn") == []
    # ...and a sync-only run (the verify schedule's kind) refuses to publish the bad table.
    refused = defs.resolve_job_def("sync_only").execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert not refused.success
    (failure,) = [e for e in refused.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "churn_scores failed score_is_a_probability" in (
        failure.step_failure_data.user_failure_data.description
    )
    assert redis_client.hgetall("churn:U2") == {"churn_score": "0.9"}


def test_a_synced_table_in_a_module_of_the_graph_needs_no_registration():
    """This module, added to the graph, brings its asset, check and synced table as they are."""
    import sys

    import assets
    from personalization_pipeline.definitions import build_definitions

    definitions = build_definitions(graph=(assets, sys.modules[__name__]))
    graph = definitions.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    assert {churn_scores.key, churn.asset.key, dg.AssetKey("redis_user_profiles")} <= keys
    assert dg.AssetCheckKey(churn.asset.key, "readback") in graph.asset_check_keys
    assert dg.AssetCheckKey(churn_scores.key, "score_is_a_probability") in graph.asset_check_keys
    assert graph.get(churn.asset.key).freshness_policy == REDIS_FRESHNESS
    # The rest of the graph is all there too, once.
    assert len(keys) == len(build_definitions().resolve_asset_graph().get_all_asset_keys()) + 2
