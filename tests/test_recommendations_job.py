"""recommendations_job on the sample catalog and orders: the model, its checks and its three
Redis syncs, run as Dagster runs them; what personalize() then reads is what the sync wrote."""

from __future__ import annotations

import dagster as dg
import duckdb
import orjson
import pytest

from assets.activation import similar_products
from assets.models import (
    product_recommendations,
    recommended_in_catalog,
    supported_have_neighbours,
)
from personalization_pipeline.definitions import defs
from personalization_pipeline.events.effects import PURCHASE_FIELD
from personalization_pipeline.keys import (
    ProductMember,
    popular_key,
    product_key,
    similar_key,
    sync_epoch_key,
    user_key,
)
from personalization_pipeline.resources.catalog import CatalogFilesResource
from personalization_pipeline.serving.personalize import personalize
from personalization_pipeline.warehouse.recommendations import ModelSettings, build_recommendations
from tests.conftest import REPO_ROOT, SAMPLE_DIR

SYNCS = ("redis_products", "redis_product_similarity", "redis_popular_products")
WRITES = ("zadd", "del", "set", "multi", "exec", "hset", "hdel", "evalsha", "eval")


def run_job(resources: dict, **kwargs):
    job = defs.resolve_job_def("recommendations_job")
    return job.execute_in_process(resources=resources, raise_on_error=False, **kwargs)


def materialized(result, name: str) -> dict:
    (event,) = [
        e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == name
    ]
    return {key: value.value for key, value in event.materialization.metadata.items()}


def checks(result) -> dict[str, bool]:
    return {
        f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed
        for e in result.get_asset_check_evaluations()
    }


def write_commands(client) -> dict[str, int]:
    stats = client.info("commandstats")
    return {n: stats[f"cmdstat_{n}"]["calls"] for n in WRITES if f"cmdstat_{n}" in stats}


def warehouse_rows(resources: dict, sql: str) -> list[tuple]:
    with duckdb.connect(resources["warehouse"].path, read_only=True) as connection:
        return connection.execute(sql).fetchall()


def test_the_job_builds_checks_and_syncs_the_model(pipeline_resources, redis_client):
    result = run_job(pipeline_resources)
    assert result.success
    assert checks(result) == {
        "product_recommendations:recommended_skus_in_catalog": True,
        "product_recommendations:supported_products_have_neighbours": True,
        **{f"{sync}:readback": True for sync in SYNCS},
    }
    model = materialized(result, "product_recommendations")
    neighbours = warehouse_rows(
        pipeline_resources,
        "SELECT sku, neighbour_sku, similarity, category, price_band, member_only "
        "FROM analytics.product_similarity ORDER BY sku, rank",
    )
    assert model["neighbour_rows"] == len(neighbours) > 500
    products = materialized(result, "products")
    assert products["dagster/row_count"] == 120
    assert products["rejected_lines"] == 0
    # Every similar:<sku> in Redis equals the warehouse, member by member, score by score.
    lists: dict[str, list] = {}
    for sku, neighbour, similarity, category, band, member_only in neighbours:
        lists.setdefault(sku, []).append(((neighbour, category, band, member_only), similarity))
    assert model["skus_with_neighbours"] == len(lists)
    for sku, expected in lists.items():
        stored = redis_client.zrange(similar_key(sku), 0, -1, desc=True, withscores=True)
        assert sorted((tuple(ProductMember.parse(m)), s) for m, s in stored) == sorted(expected)
    top = "SELECT sku FROM analytics.popular_products WHERE rank = 1"
    (best,) = warehouse_rows(pipeline_resources, top)
    assert (
        ProductMember.parse(redis_client.zrange(popular_key(), 0, 0, desc=True)[0]).sku == best[0]
    )
    assert redis_client.hget(product_key("SKU-1"), "category") == "running"
    keys = set(redis_client.scan_iter(count=1000))
    by_category = "SELECT DISTINCT category FROM analytics.popular_products_by_category"
    categories = {category for (category,) in warehouse_rows(pipeline_resources, by_category)}
    assert keys == {
        *(similar_key(sku) for sku in lists),
        popular_key(),
        *(popular_key(c) for c in categories),
        *(product_key(f"SKU-{n}") for n in range(1, 121)),
        *(sync_epoch_key(name) for name in ("products", "product_similarity", "popular_products")),
    }


def test_an_unchanged_rerun_writes_nothing_to_redis(pipeline_resources, redis_client):
    assert run_job(pipeline_resources).success
    redis_client.config_resetstat()
    result = run_job(pipeline_resources)
    assert result.success
    for sync in SYNCS:
        assert materialized(result, sync)["rows_written"] == 0, sync
    assert write_commands(redis_client) == {}


def test_a_changed_catalog_replaces_the_lists_holding_the_product(
    pipeline_resources, redis_client, tmp_path
):
    assert run_job(pipeline_resources).success
    (holder,) = warehouse_rows(
        pipeline_resources,
        "SELECT sku FROM analytics.product_similarity WHERE neighbour_sku = 'SKU-1' LIMIT 1",
    )
    catalog = tmp_path / "products.csv"
    text = (SAMPLE_DIR / "products.csv").read_text()
    line = "SKU-1,Compact Running Sock 1,running,118.99,"
    catalog.write_text(text.replace(line + "false", line + "true"))
    files = CatalogFilesResource(
        products_path=str(catalog), orders_path=str(SAMPLE_DIR / "orders.csv")
    )
    result = run_job({**pipeline_resources, "catalog_files": files})
    assert result.success
    assert materialized(result, "redis_product_similarity")["changed"] > 0
    members = [ProductMember.parse(m) for m in redis_client.zrange(similar_key(holder[0]), 0, -1)]
    skus = [m.sku for m in members]
    # Replaced whole: SKU-1 is there once, member-only now; its old member did not survive.
    assert skus.count("SKU-1") == 1
    assert [m.member_only for m in members if m.sku == "SKU-1"] == [True]
    assert redis_client.hget(product_key("SKU-1"), "member_only") == "true"


def test_the_checks_fail_on_a_broken_model(tmp_path):
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as connection:
        from personalization_pipeline.warehouse.catalog import replace_orders, replace_products

        replace_products(connection, SAMPLE_DIR / "products.csv", 0.2)
        replace_orders(connection, SAMPLE_DIR / "orders.csv", 0.2)
        build_recommendations(connection, REPO_ROOT / "assets" / "sql", ModelSettings())
        assert recommended_in_catalog(connection).passed
        assert supported_have_neighbours(connection).passed
        (sku,) = connection.execute(
            "SELECT neighbour_sku FROM analytics.product_similarity LIMIT 1"
        ).fetchone()
        connection.execute("DELETE FROM raw.products WHERE sku = ?", [sku])
        failed = recommended_in_catalog(connection)
        assert not failed.passed
        assert failed.metadata["violations"].value >= 1
        (anchor,) = connection.execute(
            "SELECT sku FROM analytics.product_similarity LIMIT 1"
        ).fetchone()
        connection.execute("DELETE FROM analytics.product_similarity WHERE sku = ?", [anchor])
        failed = supported_have_neighbours(connection)
        assert not failed.passed
        assert anchor in failed.metadata["examples"].value


@pytest.mark.parametrize("user", ["U000002"])
def test_personalize_reads_what_the_sync_wrote(pipeline_resources, redis_client, user):
    assert run_job(pipeline_resources).success
    (recent,) = warehouse_rows(
        pipeline_resources,
        f"SELECT sku FROM raw.orders WHERE user_id = '{user}' ORDER BY ordered_at DESC LIMIT 1",
    )
    key = user_key(user)
    redis_client.hset(
        key, mapping={"membership_status": "expired", f"{PURCHASE_FIELD}1": recent[0]}
    )
    result = personalize(redis_client, user, limit=5)
    assert not result.cold_start
    neighbours = {
        ProductMember.parse(m).sku for m in redis_client.zrange(similar_key(recent[0]), 0, -1)
    }
    similar = [r for r in result.recommendations if r.source == "similar"]
    assert similar and {r.sku for r in similar} <= neighbours
    assert orjson.loads(result.to_json())["userId"] == user


def test_the_syncs_refuse_a_model_whose_blocking_check_failed(pipeline_resources, redis_client):
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("recommendations_job")
    assert job.execute_in_process(resources=pipeline_resources, instance=instance).success
    # The latest evaluation of a blocking check on the model failed (a bad build whose syncs
    # were skipped): a run that syncs without rebuilding must not publish that model.
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey("product_recommendations"),
            check_name="supported_products_have_neighbours",
            passed=False,
        )
    )
    # The sync alone, as a run that does not rebuild the model.
    result = dg.materialize(
        [product_recommendations, similar_products.asset],
        selection=[similar_products.asset],
        resources=pipeline_resources,
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "supported_products_have_neighbours" in str(failure.step_failure_data.error)


def sync_alone(pipeline_resources, instance, **config):
    """The similarity sync without rebuilding the model, with ``config`` as its run config."""
    return dg.materialize(
        [product_recommendations, similar_products.asset],
        selection=[similar_products.asset],
        resources=pipeline_resources,
        instance=instance,
        run_config={"ops": {similar_products.asset.op.name: {"config": config}}},
        raise_on_error=False,
    )


def edit_warehouse(resources: dict, sql: str) -> None:
    with duckdb.connect(resources["warehouse"].path) as connection:
        connection.execute(sql)


def test_an_empty_model_deletes_no_list_unless_forced(pipeline_resources, redis_client):
    instance = dg.DagsterInstance.ephemeral()
    assert run_job(pipeline_resources, instance=instance).success
    lists = len(list(redis_client.scan_iter(similar_key("*"))))
    edit_warehouse(pipeline_resources, "DELETE FROM analytics.product_similarity")
    redis_client.config_resetstat()
    result = sync_alone(pipeline_resources, instance)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = str(failure.step_failure_data.error)
    assert f"would delete {lists} of {lists} lists" in message and "force: true" in message
    assert write_commands(redis_client) == {}
    assert len(list(redis_client.scan_iter(similar_key("*")))) == lists

    assert sync_alone(pipeline_resources, instance, force=True).success
    assert list(redis_client.scan_iter(similar_key("*"))) == []


def test_a_dry_run_is_an_observation_that_writes_nothing(pipeline_resources, redis_client):
    instance = dg.DagsterInstance.ephemeral()
    assert run_job(pipeline_resources, instance=instance).success
    (sku,) = warehouse_rows(pipeline_resources, "SELECT min(sku) FROM analytics.product_similarity")
    edit_warehouse(
        pipeline_resources,
        f"UPDATE analytics.product_similarity SET similarity = 0.5 WHERE sku = '{sku[0]}'",
    )
    key = dg.AssetKey("redis_product_similarity")
    materializations = instance.get_latest_materialization_event(key)
    redis_client.config_resetstat()
    result = sync_alone(pipeline_resources, instance, dry_run=True)
    assert result.success
    assert result.get_asset_materialization_events() == []
    (observation,) = [e.asset_observation_data.asset_observation for e in result.all_events
                      if e.event_type_value == "ASSET_OBSERVATION"]  # fmt: skip
    plan = {name: value.value for name, value in observation.metadata.items()}
    assert (plan["dry_run"], plan["changed"], plan["removed"], plan["rows_written"]) == (
        True,
        1,
        0,
        0,
    )
    assert plan["plan_samples"]["changed"][0]["key"] == similar_key(sku[0])
    assert write_commands(redis_client) == {}
    assert instance.get_latest_materialization_event(key) == materializations


def test_the_verify_job_repairs_every_table_a_flushed_redis_lost(pipeline_resources, redis_client):
    """redis_verify_schedule's job syncs every redis_* asset without rebuilding anything: after
    FLUSHALL its next run puts back profiles, catalog hashes and recommendation lists alike."""
    warehouse_job = defs.resolve_job_def("warehouse_actions_job")
    assert warehouse_job.execute_in_process(resources=pipeline_resources).success
    assert run_job(pipeline_resources).success
    keys = redis_client.dbsize()
    redis_client.flushall()
    verify = defs.resolve_job_def("redis_sync_job").execute_in_process(resources=pipeline_resources)
    assert verify.success
    synced = {e.asset_key.to_user_string() for e in verify.get_asset_materialization_events()}
    assert synced == {"redis_user_profiles", *SYNCS}
    assert redis_client.dbsize() == keys
    assert redis_client.zcard(similar_key("SKU-1")) > 0
    assert redis_client.hget(user_key("U000001"), "membership_status") == "loyalty_member"
