"""SALESFORCE_EXTRA_FIELDS: Contact fields beyond the fixed columns land as typed columns of
their own, through the asset, from the local Salesforce server (REST and Bulk) and from an
export; a field the org lacks is refused naming the setting; `*` lands every plain field."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from assets import traits
from assets.sources import salesforce_contacts
from personalization_pipeline.definitions import build_definitions
from personalization_pipeline.resources.salesforce import SampleContactSource
from personalization_pipeline.resources.warehouse import WarehouseResource
from personalization_pipeline.testing.salesforce_server import minutes_ago
from personalization_pipeline.warehouse.tables import SALESFORCE_CONTACT
from tests.conftest import SAMPLE_DIR
from tests.test_salesforce_asset import materialize, metadata
from tests.test_trait_sources import trait_module  # noqa: F401 (a fixture)

EXTRA = ["Churn_Score__c", "lifetime_value__c", "Newsletter_Opt_In__c", "Birthdate", "MailingCity"]
TYPES = {
    "churn_score__c": "DOUBLE",
    "lifetime_value__c": "DOUBLE",
    "newsletter_opt_in__c": "BOOLEAN",
    "birthdate": "DATE",
    "mailingcity": "VARCHAR",
}


def column_types(tmp_path: Path) -> dict[str, str]:
    with duckdb.connect(str(tmp_path / "w.duckdb")) as connection:
        rows = connection.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'raw' AND table_name = 'salesforce_contact'"
        ).fetchall()
    return dict(rows)


def rows(tmp_path: Path, columns: str) -> dict[str, tuple]:
    with duckdb.connect(str(tmp_path / "w.duckdb")) as connection:
        found = connection.execute(f"SELECT id, {columns} FROM raw.salesforce_contact").fetchall()
    return {row[0]: row[1:] for row in found}


def failure(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    return result.failure_data_for_node("salesforce_contacts").error.message


def insert_scored(org, scored_at: datetime | None = None) -> tuple[str, str]:
    scored = org.insert(
        modstamp=scored_at,
        LastName="Scored",
        Email="scored@example.com",
        App_User_Id__c="U1",
        Churn_Score__c=0.82,
        Lifetime_Value__c=1250.5,
        Newsletter_Opt_In__c=True,
        Birthdate=date(1990, 5, 17),
        MailingCity="Lisbon",
    )
    blank = org.insert(LastName="Blank", App_User_Id__c="U2")
    return scored, blank


@pytest.mark.parametrize("bulk_threshold", [50_000, 0], ids=["rest", "bulk"])
def test_extra_fields_land_typed_from_describe(salesforce_server, tmp_path, bulk_threshold):
    scored, blank = insert_scored(salesforce_server.org)
    result = materialize(
        salesforce_server, tmp_path, extra_fields=EXTRA, bulk_threshold=bulk_threshold
    )
    assert result.success
    meta = metadata(result)
    assert meta["api"] == ("REST" if bulk_threshold else "Bulk API 2.0")
    assert meta["extra_columns"] == ", ".join(TYPES)
    assert {c: t for c, t in column_types(tmp_path).items() if c in TYPES} == TYPES
    assert rows(tmp_path, ", ".join(TYPES)) == {
        scored: (0.82, 1250.5, True, date(1990, 5, 17), "Lisbon"),
        blank: (None, None, False, None, None),
    }


def test_a_field_added_later_is_filled_for_every_contact_and_a_removed_one_stays(
    salesforce_server, tmp_path
):
    org = salesforce_server.org
    scored, _ = insert_scored(org, scored_at=minutes_ago(120))
    assert materialize(salesforce_server, tmp_path).success
    assert "churn_score__c" not in column_types(tmp_path)

    # An incremental run reads only the newest contact again (the lookback); the run that adds
    # the column reads every contact again.
    meta = metadata(materialize(salesforce_server, tmp_path, extra_fields=["Churn_Score__c"]))
    assert meta["extra_columns_added"] == "churn_score__c" and meta["rows_fetched"] == 2
    assert rows(tmp_path, "churn_score__c")[scored] == (0.82,)
    meta = metadata(materialize(salesforce_server, tmp_path, extra_fields=["Churn_Score__c"]))
    assert meta["extra_columns_added"] == "none" and meta["rows_fetched"] == 1

    org.update(scored, LastName="Renamed", Churn_Score__c=0.1)
    meta = metadata(materialize(salesforce_server, tmp_path))
    assert meta["extra_columns"] == "none" and meta["rows_updated"] == 1
    assert column_types(tmp_path)["churn_score__c"] == "DOUBLE", "the column stays"
    assert rows(tmp_path, "last_name, churn_score__c")[scored] == ("Renamed", 0.82)


def test_a_field_the_org_lacks_fails_at_once_naming_the_setting(salesforce_server, tmp_path):
    assert materialize(salesforce_server, tmp_path).success
    result = materialize(salesforce_server, tmp_path, extra_fields=["Churn_Scroe__c", "Phone"])
    message = failure(result)
    assert "Contact has no field Churn_Scroe__c (in SALESFORCE_EXTRA_FIELDS; closest: " in message
    assert "Churn_Score__c" in message and "Fix SALESFORCE_EXTRA_FIELDS" in message
    assert "phone" not in column_types(tmp_path), "nothing added, not even the field that exists"


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["MailingAddress"], "compound address field"),
        (["Email"], "Contact field Email (in SALESFORCE_EXTRA_FIELDS) already lands in column"),
    ],
)
def test_fields_that_cannot_be_a_column_of_their_own_are_refused(
    salesforce_server, tmp_path, extra, expected
):
    message = failure(materialize(salesforce_server, tmp_path, extra_fields=extra))
    assert expected in message
    if extra == ["MailingAddress"]:
        assert "MailingStreet, MailingCity, MailingPostalCode, MailingCountry" in message


@pytest.mark.parametrize("bulk_threshold", [50_000, 0], ids=["rest", "bulk"])
def test_star_lands_every_field_but_compound_ones_and_the_fixed_ones(
    salesforce_server, tmp_path, bulk_threshold
):
    scored, _ = insert_scored(salesforce_server.org)
    result = materialize(
        salesforce_server, tmp_path, extra_fields=["*"], bulk_threshold=bulk_threshold
    )
    assert result.success, "Bulk refuses compound fields: they are not selected"
    types = column_types(tmp_path)
    # Not MailingAddress (compound), nor Email, FirstName, ... (their fixed columns hold them).
    assert set(types) == {*SALESFORCE_CONTACT.column_names, *TYPES} | {
        "accountid",
        "name",
        "phone",
        "mailingstreet",
        "mailingpostalcode",
        "mailingcountry",
        "createddate",
        "lastmodifieddate",
    }
    assert {c: types[c] for c in TYPES} == TYPES
    assert types["createddate"] == "TIMESTAMP WITH TIME ZONE"
    assert rows(tmp_path, "churn_score__c, mailingcity, name")[scored] == (0.82, "Lisbon", "Scored")


EXPORT_HEADER = "Id,Email,FirstName,LastName,Membership_Status__c,App_User_Id__c,SystemModstamp,"


def export(tmp_path: Path, churn: str) -> Path:
    path = tmp_path / "contacts.csv"
    path.write_text(
        EXPORT_HEADER + "IsDeleted,Churn_Score__c\n"
        f"003Dn0000000001AAA,a@example.com,A,B,Active,U1,2024-07-13T12:26:00.000Z,false,{churn}\n"
    )
    return path


def land_export(tmp_path: Path, path: Path, **settings) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [salesforce_contacts],
        resources={
            "salesforce": SampleContactSource(path=str(path), **settings),
            "warehouse": WarehouseResource(path=str(tmp_path / "w.duckdb")),
        },
        raise_on_error=False,
    )


def test_an_export_lands_extra_columns_of_its_header_as_text(tmp_path):
    path = export(tmp_path, "0.82")
    result = land_export(tmp_path, path, extra_fields=["churn_score__c"])
    assert result.success
    assert column_types(tmp_path)["churn_score__c"] == "VARCHAR", "no describe: text"
    assert rows(tmp_path, "churn_score__c") == {"003Dn0000000001AAA": ("0.82",)}
    assert land_export(tmp_path, path, extra_fields=["*"]).success, "* = every unmapped column"

    message = failure(land_export(tmp_path, path, extra_fields=["Lifetime_Value__c"]))
    assert f"{path} has no column Lifetime_Value__c (in SALESFORCE_EXTRA_FIELDS" in message

    path.write_text(path.read_text().replace("Churn_Score__c", 'Churn "Score"'))
    message = failure(land_export(tmp_path, path, extra_fields=["*"]))
    assert """'Churn "Score"' (in SALESFORCE_EXTRA_FIELDS) is not a Salesforce field""" in message


def test_an_export_keeps_the_type_an_api_load_gave_and_the_api_refuses_a_type_change(
    salesforce_server, tmp_path
):
    insert_scored(salesforce_server.org)
    assert materialize(salesforce_server, tmp_path, extra_fields=["Churn_Score__c"]).success
    assert land_export(
        tmp_path, export(tmp_path, "0.5"), extra_fields=["Churn_Score__c"], max_delete_fraction=1
    ).success
    assert column_types(tmp_path)["churn_score__c"] == "DOUBLE"
    assert rows(tmp_path, "churn_score__c")["003Dn0000000001AAA"] == (0.5,)

    message = failure(
        land_export(tmp_path, export(tmp_path, "high"), extra_fields=["*"], max_delete_fraction=1)
    )
    assert "contacts.csv, line 2, column Churn_Score__c: 'high' is not a valid DOUBLE" in message

    with duckdb.connect(str(tmp_path / "w.duckdb")) as connection:
        connection.execute("ALTER TABLE raw.salesforce_contact DROP COLUMN churn_score__c")
    assert land_export(
        tmp_path, export(tmp_path, "high"), extra_fields=["*"], max_delete_fraction=1
    ).success
    message = failure(materialize(salesforce_server, tmp_path, extra_fields=["Churn_Score__c"]))
    assert (
        "raw.salesforce_contact.churn_score__c is VARCHAR, but Contact field Churn_Score__c "
        "(SALESFORCE_EXTRA_FIELDS) is now DOUBLE; a column keeps its type." in message
    )


# All it takes to make a landed extra field a profile trait: this module and the setting.
CHURN_TRAIT_MODULE = """
from assets.sources import salesforce_contacts
from personalization_pipeline.traits import PROFILE_USERS, TraitSource

CHURN = TraitSource(
    name="salesforce_churn",
    asset=salesforce_contacts,
    table=PROFILE_USERS,
    traits={"churn_score__c": "churn_score"},
)
"""


def test_an_extra_field_reaches_redis_as_a_trait_with_a_setting_and_a_trait_source(
    trait_module,  # noqa: F811 (the fixture imported above)
    pipeline_resources,
    redis_client,
    tmp_path,
):
    header, first, *others = (SAMPLE_DIR / "salesforce_contacts.csv").read_text().splitlines()
    assert ",U000001," in first
    path = tmp_path / "contacts.csv"
    path.write_text(
        "\n".join([f"{header},Churn_Score__c", f"{first},0.91", *(f"{r},0.25" for r in others)])
    )
    source = SampleContactSource(path=str(path), extra_fields=["Churn_Score__c"])
    definitions = build_definitions((traits, trait_module(CHURN_TRAIT_MODULE)))
    job = definitions.resolve_job_def("warehouse_actions_job")
    result = job.execute_in_process(resources={**pipeline_resources, "salesforce": source})
    assert result.success
    assert redis_client.hget("user:U000001", "churn_score") == "0.91"
    assert redis_client.hget("user:U000002", "churn_score") == "0.25"
    assert redis_client.hget("user:U000001", "membership_status") == "loyalty_member"
