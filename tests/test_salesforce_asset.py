"""The salesforce_contacts asset over the API path, against the local Salesforce server."""

from __future__ import annotations

import logging

import dagster as dg
import requests

from assets.sources import salesforce_contacts
from personalization_pipeline.resources.salesforce import SalesforceApiSource
from personalization_pipeline.resources.warehouse import WarehouseResource
from personalization_pipeline.salesforce.client import SalesforceClient
from personalization_pipeline.testing.salesforce_server import SalesforceServer, local_session


class LocalSalesforceSource(SalesforceApiSource):
    """The production resource, reaching the local server through the documented test seam."""

    port: int

    def requests_session(self) -> requests.Session | None:
        return local_session(self.port)

    def connect(self, *args, **kwargs) -> SalesforceClient:
        client = super().connect(*args, **kwargs)
        # The org's clock, which tests move forward instead of waiting.
        client.clock = SalesforceServer.running[self.port].org.now
        return client


def local_source(server, **settings) -> LocalSalesforceSource:
    """A password-login source for the local server, with test-speed retries and polling."""
    creds = server.org.credentials
    return LocalSalesforceSource(
        port=server.port,
        username=creds.username,
        password=creds.password,
        security_token=creds.security_token,
        retry_base_seconds=0.001,
        bulk_poll_seconds=0,
        **settings,
    )


def materialize(server, tmp_path, full_refresh=False, instance=None, **settings):
    source = local_source(server, **settings)
    result = dg.materialize(
        [salesforce_contacts],
        resources={
            "salesforce": source,
            "warehouse": WarehouseResource(path=str(tmp_path / "w.duckdb")),
        },
        run_config={"ops": {"salesforce_contacts": {"config": {"full_refresh": full_refresh}}}},
        instance=instance,
        raise_on_error=False,
    )
    return result


def metadata(result) -> dict:
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_incremental_and_full_refresh_metadata(salesforce_server, tmp_path):
    org = salesforce_server.org
    first, gone, *_ = org.insert_many(10)
    meta = metadata(materialize(salesforce_server, tmp_path))
    assert meta["api"] == "REST" and meta["rows_inserted"] == 10 and meta["cursor_before"] == "none"
    assert meta["api_calls_used"] == 3 and meta["api_usage_reported"] == "3/100000"
    assert org.credentials.password not in str(meta)
    org.purge(gone)
    org.update(first, Email="new@example.com")
    meta = metadata(materialize(salesforce_server, tmp_path, full_refresh=True))
    assert (meta["full_refresh"], meta["rows_updated"], meta["rows_marked_deleted"]) == (True, 1, 1)
    meta = metadata(materialize(salesforce_server, tmp_path, bulk_threshold=0))
    assert meta["api"] == "Bulk API 2.0" and meta["rows_fetched"] == 9


def test_a_full_refresh_deleting_too_much_fails_without_retries(salesforce_server, tmp_path):
    org = salesforce_server.org
    ids = org.insert_many(4)
    assert materialize(salesforce_server, tmp_path).success
    org.purge(ids[0])
    org.logins.clear()
    result = materialize(salesforce_server, tmp_path, full_refresh=True)
    assert not result.success
    message = result.failure_data_for_node("salesforce_contacts").error.message
    assert "would mark 1 of the 4 live contacts deleted" in message
    assert "SALESFORCE_MAX_DELETE_FRACTION=1" in message
    assert org.logins == ["soap"], "no run retry"
    meta = metadata(materialize(salesforce_server, tmp_path, True, max_delete_fraction=1))
    assert meta["rows_marked_deleted"] == 1


def test_budget_stop_succeeds_with_a_warning(salesforce_server, tmp_path):
    salesforce_server.org.insert_many(3)
    salesforce_server.org.set_api_usage(90, 100)
    result = materialize(salesforce_server, tmp_path)
    assert result.success
    assert "budget" in metadata(result)["stopped_early"]


def test_a_field_mapping_error_fails_without_retries(salesforce_server, tmp_path):
    result = materialize(salesforce_server, tmp_path, email_field="Emial")
    assert not result.success
    failure = result.failure_data_for_node("salesforce_contacts")
    assert "Emial" in failure.error.message and "Email" in failure.error.message
    assert salesforce_server.org.logins == ["soap"], "no run retry"


def test_one_field_for_two_columns_fails_naming_both_without_retries(salesforce_server, tmp_path):
    salesforce_server.org.insert_many(2)
    result = materialize(salesforce_server, tmp_path, user_id_field="Email")
    assert not result.success
    message = result.failure_data_for_node("salesforce_contacts").error.message
    assert "Contact field Email is mapped to two columns, user_id and email" in message
    assert "SALESFORCE_USER_ID_FIELD or SALESFORCE_EMAIL_FIELD" in message
    assert salesforce_server.org.logins == [], "refused before logging in, and no run retry"


def warnings_logged(instance: dg.DagsterInstance, result) -> list[str]:
    return [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.level == logging.WARNING
    ]


def test_session_login_warns_at_run_start(salesforce_server, tmp_path):
    salesforce_server.org.insert_many(2)
    session_login = {
        "instance_url": salesforce_server.instance_url,
        "session_id": salesforce_server.session_id(),
    }
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(salesforce_server, tmp_path, instance=instance, **session_login)
    assert metadata(result)["rows_inserted"] == 2
    warnings = warnings_logged(instance, result)
    assert any("not for unattended sensors and schedules" in text for text in warnings), warnings


def test_a_hard_delete_gap_warns_and_refreshes_everything(salesforce_server, tmp_path):
    org = salesforce_server.org
    gone, *_ = org.insert_many(10)
    assert materialize(salesforce_server, tmp_path).success
    org.purge(gone)
    org.purge_delete_log()
    org.advance(minutes=2)
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(salesforce_server, tmp_path, instance=instance)
    meta = metadata(result)
    assert meta["hard_deletes_gap"].startswith("Salesforce's delete log now starts at")
    assert (meta["full_refresh"], meta["rows_marked_deleted"]) == (True, 1)
    assert meta["hard_deletes_gap"] in warnings_logged(instance, result)
