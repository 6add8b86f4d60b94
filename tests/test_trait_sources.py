"""Trait sources: one module registers a table, and its traits reach Redis through the normal job;
bad registrations are refused when the definitions load, bad tables when the run starts."""

import importlib
import sys
import textwrap

import dagster as dg
import duckdb
import pytest

from assets import traits
from assets.sources import income_enrichment, salesforce_contacts
from personalization_pipeline.definitions import build_definitions
from personalization_pipeline.traits import PROFILE_USERS, TraitSource, TraitSourceError, check
from personalization_pipeline.warehouse.profiles import TraitSourceDataError, check_sources

# A complete trait source in its own module, as the README's recipe writes it.
CHURN_MODULE = '''
import dagster as dg

from personalization_pipeline.resources.warehouse import WarehouseResource
from personalization_pipeline.traits import TraitSource


@dg.asset(
    group_name="sources",
    pool="duckdb",
    metadata={
        "dagster/table_name": "raw.churn_scores",
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn("user_id", "VARCHAR"), dg.TableColumn("score", "DOUBLE")]
        ),
    },
)
def churn_scores(warehouse: WarehouseResource) -> None:
    """Churn risk per user, from the data science notebook."""
    with warehouse.connect() as connection:
        connection.execute("CREATE SCHEMA IF NOT EXISTS raw")
        connection.execute(
            "CREATE OR REPLACE TABLE raw.churn_scores AS SELECT * FROM (VALUES "
            "('U000001', 0.91), ('U000002', 0.12), ('NOT-A-USER', 0.5)) AS t(user_id, score)"
        )


CHURN = TraitSource(
    name="churn", asset=churn_scores, table="raw.churn_scores", traits={"score": "churn_risk"}
)
'''


@pytest.fixture
def trait_module(tmp_path, monkeypatch):
    """Import `source` as a fresh module from tmp_path, as a data engineer's new file would be."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def load(source: str, name: str = "my_traits"):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        sys.modules.pop(name, None)
        importlib.invalidate_caches()
        return importlib.import_module(name)

    yield load
    sys.modules.pop("my_traits", None)


def test_a_trait_source_in_a_new_module_reaches_redis_through_the_normal_job(
    trait_module, pipeline_resources, redis_client
):
    definitions = build_definitions((traits, trait_module(CHURN_MODULE)))
    graph = definitions.resolve_asset_graph()
    assert dg.AssetKey("churn_scores") in graph.get(dg.AssetKey("user_profiles")).parent_keys

    job = definitions.resolve_job_def("warehouse_actions_job")
    result = job.execute_in_process(resources=pipeline_resources)

    assert result.success
    assert redis_client.hget("user:U000001", "churn_risk") == "0.91"
    assert redis_client.hget("user:U000002", "churn_risk") == "0.12"
    # The sources that were there keep working beside it; a score for no profile goes nowhere.
    assert redis_client.hget("user:U000001", "membership_status") == "loyalty_member"
    assert not redis_client.exists("user:NOT-A-USER")
    checks = {e.asset_check_key.name for e in result.get_asset_check_evaluations()}
    assert {"user_id_valid", "readback"} <= checks
    profiles = result.asset_materializations_for_node("user_profiles")[0].metadata
    assert profiles["profiles_with_trait"].value["churn_risk"] == 2


def source(**overrides) -> TraitSource:
    fields = {"name": "extra", "asset": dg.AssetKey("extra"), "table": "raw.extra"}
    return TraitSource(**{**fields, "traits": ["score"], **overrides})


def test_a_trait_declared_by_two_sources_is_refused_naming_both():
    membership = source(name="crm_status", traits={"status": "membership_status"})
    with pytest.raises(TraitSourceError) as refused:
        check([*traits_of_the_project(), membership])
    message = str(refused.value)
    assert "'membership_status' is declared by two trait sources" in message
    assert "salesforce_membership" in message and "crm_status" in message


def test_two_sources_with_one_name_are_refused():
    with pytest.raises(TraitSourceError, match="two trait sources are named 'extra'"):
        check([source(traits=["a"]), source(traits=["b"])])


def test_a_key_column_missing_from_the_assets_column_schema_is_refused_at_load():
    asset = dg.AssetSpec(
        "scores",
        metadata={
            "dagster/table_name": "raw.scores",
            "dagster/column_schema": dg.TableSchema(columns=[dg.TableColumn("score", "DOUBLE")]),
        },
    )
    with pytest.raises(TraitSourceError, match=r"raw.scores has no column user_id .*asset scores"):
        check([source(name="scores", asset=asset, table="raw.scores")])


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"key": "phone"}, "key must be one of"),
        ({"traits": []}, "declares no traits"),
        ({"traits": {"score": "user_id"}}, "trait name 'user_id'"),
        ({"traits": {"score": "__proto__"}}, "trait name '__proto__'"),
        ({"name": "Has Spaces"}, "its name must match"),
    ],
)
def test_a_malformed_trait_source_is_refused(overrides, complaint):
    with pytest.raises(TraitSourceError, match=complaint):
        source(**overrides)


def test_the_project_registers_salesforce_membership_and_income_from_their_modules():
    sources = traits_of_the_project()
    assert [(s.name, s.asset_key, list(s.trait_columns.values())) for s in sources] == [
        ("income_enrichment", income_enrichment.key, ["income_bracket"]),
        ("salesforce_membership", salesforce_contacts.key, ["email", "membership_status"]),
    ]


def traits_of_the_project() -> list[TraitSource]:
    from assets.warehouse import TRAIT_SOURCES

    return TRAIT_SOURCES


def test_a_table_without_a_declared_column_or_with_repeated_keys_is_refused_at_run(tmp_path):
    with duckdb.connect(str(tmp_path / "w.duckdb")) as connection:
        connection.execute("CREATE SCHEMA raw")
        connection.execute("CREATE TABLE raw.extra AS SELECT 'U1' AS user_id, 1 AS other")
        with pytest.raises(TraitSourceDataError, match=r"raw.extra has no column score"):
            check_sources(connection, [source()])
        connection.execute(
            "CREATE OR REPLACE TABLE raw.extra AS SELECT * FROM "
            "(VALUES ('U1', 1), ('U1', 2), ('U2', 3)) AS t(user_id, score)"
        )
        with pytest.raises(TraitSourceDataError, match=r"several rows for one user_id .*'U1'"):
            check_sources(connection, [source()])
        # Saying which row wins is enough.
        check_sources(connection, [source(prefer="score DESC")])
        with pytest.raises(TraitSourceDataError, match=r"table raw\.missing does not exist"):
            check_sources(connection, [source(table="raw.missing")])


EMAIL_SCORES = """
import dagster as dg

from personalization_pipeline.traits import TraitSource

SEGMENTS = TraitSource(
    name="segments", asset=dg.AssetKey("salesforce_contacts"), table="raw.segments",
    key="email", traits=["segment"], prefer="updated DESC", updated_at="updated",
)
"""


def test_an_email_keyed_source_matches_any_case_and_spacing_and_takes_the_preferred_row(
    trait_module, pipeline_resources, redis_client
):
    definitions = build_definitions((traits, trait_module(EMAIL_SCORES)))
    email = "  " + sample_email("U000001").upper() + " "
    with duckdb.connect(pipeline_resources["warehouse"].path) as connection:
        connection.execute("CREATE SCHEMA IF NOT EXISTS raw")
        connection.execute(
            "CREATE TABLE raw.segments AS SELECT * FROM (VALUES (?, 'old', TIMESTAMP '2020-01-01'),"
            " (?, 'vip', TIMESTAMP '2030-01-01')) AS t(email, segment, updated)",
            [email, email],
        )
    job = definitions.resolve_job_def("warehouse_actions_job")
    assert job.execute_in_process(resources=pipeline_resources).success
    assert redis_client.hget("user:U000001", "segment") == "vip"
    with duckdb.connect(pipeline_resources["warehouse"].path) as connection:
        (updated,) = connection.execute(
            "SELECT updated_at FROM analytics.user_profiles WHERE user_id = 'U000001'"
        ).fetchone()
    assert str(updated) == "2030-01-01 00:00:00"


def sample_email(user_id: str) -> str:
    import csv

    from tests.conftest import SAMPLE_DIR

    with (SAMPLE_DIR / "salesforce_contacts.csv").open() as handle:
        return next(r["Email"] for r in csv.DictReader(handle) if r["App_User_Id__c"] == user_id)


def test_profile_users_is_the_table_the_salesforce_source_reads():
    (membership,) = [s for s in traits_of_the_project() if s.name == "salesforce_membership"]
    assert membership.table == PROFILE_USERS
