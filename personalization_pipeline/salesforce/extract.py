"""Landing Salesforce Contacts in raw.salesforce_contact: incremental API extraction, and
complete exports (Data Loader CSV), which land through the same page merge as full refreshes.

One API run: check the field mapping against describe; read the cursor (the largest SystemModstamp
landed) and query from `cursor - lookback` with queryAll, so soft-deleted contacts arrive with
IsDeleted = true and late-committed records are not missed; count first and page through REST
or a Bulk 2.0 job above the threshold; merge every page by Id in its own transaction, which
also advances the cursor (REST pages are ordered by SystemModstamp; unordered Bulk pages move it
only with the last page). A crash re-reads from the last committed cursor and never skips.
After the last page of a full refresh, contacts it did not return are marked deleted, unless
that would be more than `max_delete_fraction` of the live ones.

Hard deletes (purged from the Recycle Bin, or deleted without it) never reach queryAll, so every
incremental run also reads getDeleted from where the last one ended (its own cursor, Salesforce's
latestDateCovered) and marks those contacts deleted in the transaction that advances that cursor.
Salesforce answers getDeleted for a limited time (a 30-day window over a delete log of about 15
days, less when the log is purged early); when it can no longer vouch for everything since the
cursor, the run warns and becomes a full refresh, which finds hard deletes by their absence.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb
import pandas as pd

from personalization_pipeline.errors import PermanentError
from personalization_pipeline.salesforce.client import (
    ApiLimitReached,
    SalesforceClient,
    SalesforceConfigError,
    SalesforceQueryError,
)
from personalization_pipeline.salesforce.contact_columns import ContactColumns
from personalization_pipeline.salesforce.extra_fields import (
    ExtraField,
    extra_fields_from_describe,
)
from personalization_pipeline.salesforce.mapping import check_field_mapping
from personalization_pipeline.warehouse.added_columns import add_columns
from personalization_pipeline.warehouse.csv_files import csv_pages
from personalization_pipeline.warehouse.schema import ensure_schema
from personalization_pipeline.warehouse.tables import SALESFORCE_CONTACT
from personalization_pipeline.warehouse.transaction import transaction

CURSOR_NAME = "salesforce_contact"
# Where the next getDeleted window starts: the latestDateCovered of the last one applied.
DELETED_CURSOR_NAME = "salesforce_contact_deleted"
# getDeleted ignores seconds and refuses windows under a minute: a shorter one waits a run.
MIN_DELETED_WINDOW = timedelta(minutes=1)
# Every CSV value stays a string until DuckDB casts it, as API values do.
CSV_OPTIONS: dict[str, object] = {"dtype": str, "keep_default_na": False}

STATE_TABLES = """
CREATE SCHEMA IF NOT EXISTS salesforce_state;
CREATE TABLE IF NOT EXISTS salesforce_state.cursor (
    name VARCHAR PRIMARY KEY,
    system_modstamp TIMESTAMP,   -- UTC; the largest SystemModstamp landed (getDeleted's
                                 -- latestDateCovered for salesforce_contact_deleted)
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS salesforce_state.full_refresh_seen (id VARCHAR PRIMARY KEY);
"""

# A contact changed after its delete (undeleted) keeps what the newer change says.
MARK_DELETED = """
UPDATE raw.salesforce_contact AS r
SET is_deleted = true, system_modstamp = d.deleted_date, loaded_at = now() AT TIME ZONE 'UTC'
FROM (SELECT id, CAST(deleted_date AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS deleted_date
      FROM deleted_contacts) AS d
WHERE r.id = d.id AND NOT r.is_deleted AND r.system_modstamp <= d.deleted_date
"""


@dataclass(frozen=True)
class ExtractSettings:
    lookback_minutes: float = 10.0
    bulk_threshold: int = 50_000
    api_budget_share: float = 0.8
    query_batch_size: int = 2000
    bulk_page_size: int = 50_000
    bulk_poll_seconds: float = 5.0
    # A full refresh may mark at most this share of the live contacts deleted (1 = no limit).
    max_delete_fraction: float = 0.2

    @property
    def lookback(self) -> timedelta:
        return timedelta(minutes=self.lookback_minutes)


class DeleteGuardError(SalesforceConfigError):
    """A full refresh would mark so many contacts deleted that it more likely saw too few
    (a permission change, the wrong org) than that they were all deleted."""


class ContactValueError(PermanentError, ValueError):
    """A contact value that cannot be read as its column's type (a malformed timestamp)."""


@dataclass
class ExtractResult:
    mode: str = "rest"  # rest | bulk | export
    full_refresh: bool = False
    rows_expected: int = 0
    rows_fetched: int = 0
    inserted: int = 0
    updated: int = 0
    marked_deleted: int = 0
    pages: int = 0
    cursor_before: datetime | None = None
    cursor_after: datetime | None = None
    max_fetched: datetime | None = None
    stopped_early: str | None = None
    deleted_cursor_before: datetime | None = None
    deleted_cursor_after: datetime | None = None
    # Where getDeleted reading starts again after a full refresh: the run's start less the
    # lookback (None for exports, which say nothing about the API's delete log).
    deletes_restart_at: datetime | None = None
    hard_deletes_gap: str | None = None
    extra_columns: tuple[str, ...] = ()
    # Extra columns this run added to the table (filled for every contact by this run).
    extra_columns_added: tuple[str, ...] = ()

    def summary(self) -> str:
        return (
            f"fetched {self.rows_fetched}, inserted {self.inserted}, updated {self.updated}, "
            f"marked deleted {self.marked_deleted}; "
            f"cursor {self.cursor_before} -> {self.cursor_after}"
        )

    def metadata(self) -> dict[str, object]:
        return {
            "full_refresh": self.full_refresh,
            "rows_fetched": self.rows_fetched,
            "rows_inserted": self.inserted,
            "rows_updated": self.updated,
            "rows_marked_deleted": self.marked_deleted,
            "cursor_before": str(self.cursor_before or "none"),
            "cursor_after": str(self.cursor_after or "none"),
            "deleted_cursor_before": str(self.deleted_cursor_before or "none"),
            "deleted_cursor_after": str(self.deleted_cursor_after or "none"),
            "hard_deletes_gap": self.hard_deletes_gap or "no",
            "extra_columns": ", ".join(self.extra_columns) or "none",
            "extra_columns_added": ", ".join(self.extra_columns_added) or "none",
        }


def soql_datetime(value: datetime) -> str:
    """An unquoted UTC SOQL literal. Seconds only: truncation only widens a >= window."""
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def contact_soql(fields: Mapping[str, str], since: datetime | None, ordered: bool) -> str:
    soql = f"SELECT {', '.join(fields)} FROM Contact"
    if since is not None:
        soql += f" WHERE SystemModstamp >= {soql_datetime(since)}"
    if ordered:
        soql += " ORDER BY SystemModstamp ASC"
    return soql


def ensure_state(connection: duckdb.DuckDBPyConnection) -> None:
    ensure_schema(connection)
    connection.execute(STATE_TABLES)


def read_cursor(connection: duckdb.DuckDBPyConnection, name: str = CURSOR_NAME) -> datetime | None:
    row = connection.execute(
        "SELECT system_modstamp FROM salesforce_state.cursor WHERE name = ?", [name]
    ).fetchone()
    return row[0] if row else None


def rest_datetime(text: str) -> datetime:
    """A REST datetime (2024-01-02T03:04:05.000+0000) as naive UTC, as the state tables keep it."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").astimezone(UTC).replace(tzinfo=None)


def extract_contacts(
    client: SalesforceClient,
    connection: duckdb.DuckDBPyConnection,
    fields: Mapping[str, str],
    settings: ExtractSettings | None = None,
    full_refresh: bool = False,
    log: Callable[[str], None] = lambda message: None,
    warn: Callable[[str], None] | None = None,
    extra_fields: Sequence[str] = (),
) -> ExtractResult:
    """Land new, changed and deleted Contacts; see the module docstring for the guarantees.

    `fields` maps Salesforce field names to raw.salesforce_contact columns; `extra_fields`
    names more fields to land as columns of their own (extra_fields.py). `warn` (default:
    `log`) receives what an operator must act on.
    """
    settings = settings or ExtractSettings()
    warn = warn or log
    describe = client.describe_contact()
    fields = check_field_mapping(fields, describe)
    columns = ContactColumns(fields, extra_fields_from_describe(extra_fields, describe, fields))
    ensure_state(connection)
    added = _add_extra_columns(connection, columns.extras, reread=True)
    if added:
        log(
            f"Added {', '.join(added)} to raw.salesforce_contact; reading every contact again "
            "to fill them"
        )
    result = _start(connection, full_refresh, columns=columns, added=added)
    result.deletes_restart_at = (client.clock() - settings.lookback).replace(tzinfo=None)
    if _over_budget(client, settings, result, "before the extract started"):
        return result
    deletes = None
    try:
        if not result.full_refresh:
            deletes = _read_deletes(client, connection, result, warn)
        since = None
        if result.cursor_before is not None and not result.full_refresh:
            since = result.cursor_before.replace(tzinfo=UTC) - settings.lookback
        where = contact_soql({"COUNT()": ""}, since, ordered=False)
        result.rows_expected = client.query_page(where, settings.query_batch_size)["totalSize"]
        result.mode = "bulk" if result.rows_expected > settings.bulk_threshold else "rest"
        log(
            f"{result.rows_expected} contacts changed since {since or 'the beginning'}; "
            f"reading them with {'Bulk API 2.0' if result.mode == 'bulk' else 'REST'}"
        )
        if result.mode == "bulk":
            pages = _bulk_pages(client, contact_soql(columns.fields, since, False), settings)
        else:
            pages = _rest_pages(client, contact_soql(columns.fields, since, True), settings)
        _land_pages(
            connection,
            pages,
            columns,
            result,
            settings.max_delete_fraction,
            stop=lambda: _over_budget(client, settings, result, "mid-extract"),
        )
    except ApiLimitReached as error:
        result.stopped_early = f"Salesforce refused further calls (REQUEST_LIMIT_EXCEEDED): {error}"
        log(result.stopped_early)
    # After the pages, so a soft delete they brought is counted once, as an update; the window
    # is complete whatever became of the pages.
    if deletes is not None:
        _land_deletes(connection, deletes, result)
    return result


def land_export(
    connection: duckdb.DuckDBPyConnection,
    pages: Iterable[pd.DataFrame],
    columns: ContactColumns,
    max_delete_fraction: float,
) -> ExtractResult:
    """Land a complete export (pages of Salesforce field -> value): a full refresh every time."""
    ensure_state(connection)
    added = _add_extra_columns(connection, columns.extras, reread=False)
    result = _start(connection, full_refresh=True, mode="export", columns=columns, added=added)
    _land_pages(connection, _marking_the_last(pages), columns, result, max_delete_fraction)
    return result


def _add_extra_columns(
    connection: duckdb.DuckDBPyConnection, extras: Sequence[ExtraField], reread: bool
) -> tuple[str, ...]:
    """Add the extra fields' columns the table lacks. Contacts landed before hold nothing in a
    new column, so with `reread` the API cursor is reset in the same transaction: this run reads
    every contact again, and a run that stops early or fails resumes that read."""
    with transaction(connection):
        added = add_columns(connection, SALESFORCE_CONTACT, [extra.spec() for extra in extras])
        if added and reread:
            connection.execute("DELETE FROM salesforce_state.cursor WHERE name = ?", [CURSOR_NAME])
    return tuple(added)


def read_export(path: str, page_size: int) -> Iterator[pd.DataFrame]:
    """A Data Loader CSV export, `page_size` rows at a time, parsed strictly (csv_files.py):
    a stray quote that swallows rows fails with its line instead of deleting those contacts."""
    for frame in csv_pages(path, page_size):
        page = _csv_nulls(frame)
        page.attrs = {**frame.attrs, "source": path}
        yield page


def _csv_nulls(frame: pd.DataFrame) -> pd.DataFrame:
    """Salesforce CSV (Bulk 2.0 results, Data Loader exports) writes nulls as empty cells."""
    return frame.astype(object).where(frame != "", None)


def _start(
    connection: duckdb.DuckDBPyConnection,
    full_refresh: bool,
    columns: ContactColumns,
    added: tuple[str, ...],
    mode: str = "rest",
) -> ExtractResult:
    cursor = read_cursor(connection)
    deleted_cursor = read_cursor(connection, DELETED_CURSOR_NAME)
    result = ExtractResult(
        mode=mode,
        cursor_before=cursor,
        cursor_after=cursor,
        deleted_cursor_before=deleted_cursor,
        deleted_cursor_after=deleted_cursor,
        extra_columns=tuple(extra.column for extra in columns.extras),
        extra_columns_added=added,
    )
    if full_refresh:
        _begin_full_refresh(connection, result)
    return result


def _begin_full_refresh(connection: duckdb.DuckDBPyConnection, result: ExtractResult) -> None:
    result.full_refresh = True
    connection.execute("DELETE FROM salesforce_state.full_refresh_seen")


@dataclass(frozen=True)
class DeletedWindow:
    """One getDeleted answer: [{"id", "deletedDate"}], and where the next window starts."""

    records: list[dict[str, str]]
    covered: datetime


def _read_deletes(
    client: SalesforceClient,
    connection: duckdb.DuckDBPyConnection,
    result: ExtractResult,
    warn: Callable[[str], None],
) -> DeletedWindow | None:
    """The hard deletes since the deleted cursor, or None when there is nothing to read yet.

    When Salesforce can no longer answer for the whole time since the cursor, the run becomes a
    full refresh (and warns), since only that finds the contacts deleted in the gap.
    """
    start = result.deleted_cursor_before
    if start is None and result.cursor_before is None:
        # A first load reads every contact there is; deletes after its start are in the log.
        _write_cursor(connection, result.deletes_restart_at, DELETED_CURSOR_NAME)
        result.deleted_cursor_after = result.deletes_restart_at
        return None
    if start is None:
        gap = "hard deletes have never been read into this warehouse"
    else:
        now = client.clock()
        if _minute(now) - _minute(start.replace(tzinfo=UTC)) < MIN_DELETED_WINDOW:
            return None
        try:
            answer = client.deleted_contacts(start.replace(tzinfo=UTC), now)
        except SalesforceQueryError as error:
            # Too far back, or more than 600,000 deletes since (a mass delete).
            if error.code not in ("INVALID_REPLICATION_DATE", "EXCEEDED_ID_LIMIT"):
                raise
            gap = f"Salesforce refused getDeleted from {start} UTC ({error})"
        else:
            earliest = rest_datetime(answer["earliestDateAvailable"])
            if earliest <= start:
                return DeletedWindow(
                    answer["deletedRecords"], rest_datetime(answer["latestDateCovered"])
                )
            gap = (
                f"Salesforce's delete log now starts at {earliest} UTC, after {start} UTC where "
                "the last read of it ended"
            )
            # The refresh covers deletes before the run; reading resumes where the log is whole.
            result.deletes_restart_at = max(result.deletes_restart_at, earliest)
    result.hard_deletes_gap = (
        f"{gap}, so contacts hard-deleted in between may be missing: this run is a full refresh, "
        "which marks every contact Salesforce no longer returns deleted"
    )
    warn(result.hard_deletes_gap)
    _begin_full_refresh(connection, result)
    return None


def _minute(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)


def _land_deletes(
    connection: duckdb.DuckDBPyConnection, window: DeletedWindow, result: ExtractResult
) -> None:
    """Mark the window's contacts deleted and advance the deleted cursor, in one transaction."""
    deleted = pd.DataFrame(
        [(record["id"], record["deletedDate"]) for record in window.records],
        columns=["id", "deleted_date"],
        dtype=object,
    )
    with transaction(connection):
        connection.register("deleted_contacts", deleted)
        (marked,) = connection.execute(MARK_DELETED).fetchone()
        connection.unregister("deleted_contacts")
        _write_cursor(connection, window.covered, DELETED_CURSOR_NAME)
    result.marked_deleted += marked
    result.deleted_cursor_after = window.covered


def _marking_the_last(pages: Iterable[pd.DataFrame]) -> Iterator[tuple[pd.DataFrame, bool]]:
    """Each page with whether it is the last; no pages at all is one empty last page."""
    remaining = iter(pages)
    current = next(remaining, pd.DataFrame())
    for following in remaining:
        yield current, False
        current = following
    yield current, True


def _land_pages(
    connection: duckdb.DuckDBPyConnection,
    pages: Iterable[tuple[pd.DataFrame, bool]],
    columns: ContactColumns,
    result: ExtractResult,
    max_delete_fraction: float,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Merge every page; after the last page of a full refresh, mark what it lacked deleted.

    `stop` is asked between pages whether to end early, progress kept.
    """
    for frame, is_last in pages:
        _land_page(connection, frame, columns, result, is_last)
        if not is_last:
            if stop():
                return
        elif result.full_refresh:
            _mark_missing_deleted(connection, result, max_delete_fraction)


def _over_budget(
    client: SalesforceClient, settings: ExtractSettings, result: ExtractResult, when: str
) -> bool:
    share = client.usage.share()
    if share is None or share < settings.api_budget_share:
        return False
    result.stopped_early = (
        f"API usage {client.usage.reported()} reached the {settings.api_budget_share:.0%} "
        f"budget {when}; progress so far is kept and the next run resumes from the cursor"
    )
    if result.full_refresh:
        result.stopped_early += " (contacts missing from Salesforce were not marked deleted)"
    return True


def _rest_pages(
    client: SalesforceClient, soql: str, settings: ExtractSettings
) -> Iterator[tuple[pd.DataFrame, bool]]:
    page = client.query_page(soql, settings.query_batch_size)
    while True:
        names = [n for n in page["records"][0] if n != "attributes"] if page["records"] else []
        frame = pd.DataFrame(
            {name: [r[name] for r in page["records"]] for name in names}, dtype=object
        )
        yield frame, page["done"]
        if page["done"]:
            return
        page = client.query_more(page["nextRecordsUrl"], settings.query_batch_size)


def _bulk_pages(
    client: SalesforceClient, soql: str, settings: ExtractSettings
) -> Iterator[tuple[pd.DataFrame, bool]]:
    job_id = client.bulk_query_all(soql, settings.bulk_poll_seconds)
    locator = ""
    while True:
        text, locator = client.bulk_results(job_id, locator, settings.bulk_page_size)
        frame = _csv_nulls(pd.read_csv(io.StringIO(text), **CSV_OPTIONS))
        del text
        yield frame, not locator
        if not locator:
            return


def _land_page(
    connection: duckdb.DuckDBPyConnection,
    frame: pd.DataFrame,
    columns: ContactColumns,
    result: ExtractResult,
    is_last: bool,
) -> None:
    """Merge one page, and advance the cursor in the same transaction."""
    empty = pd.Series([None] * len(frame), dtype=object)
    page = pd.DataFrame(
        {column: frame.get(name, empty) for name, column in columns.fixed.items()}
        | {extra.column: _texts(frame.get(extra.field, empty)) for extra in columns.extras},
        columns=columns.names,
        dtype=object,
    )
    result.pages += 1
    result.rows_fetched += len(page)
    with _naming_bad_values(connection, page, frame.attrs, columns), transaction(connection):
        connection.register("contact_page", page)
        connection.execute(columns.stage_sql())
        connection.unregister("contact_page")
        inserted, updated, deleted, page_max = connection.execute(columns.count_sql()).fetchone()
        connection.execute(columns.merge_sql())
        if result.full_refresh:
            connection.execute(
                "INSERT INTO salesforce_state.full_refresh_seen SELECT id FROM incoming "
                "ON CONFLICT DO NOTHING"
            )
        if page_max is not None and (result.max_fetched is None or page_max > result.max_fetched):
            result.max_fetched = page_max
        # Unordered (Bulk) pages only move the cursor once every page has landed. An export
        # never does: its dates say nothing about what the API has delivered, and a cursor
        # left by the sample data would make a later API run skip every older contact.
        ready = result.mode == "rest" or (result.mode == "bulk" and is_last)
        if (
            ready
            and result.max_fetched is not None
            and (result.cursor_after is None or result.max_fetched > result.cursor_after)
        ):
            _write_cursor(connection, result.max_fetched)
            result.cursor_after = result.max_fetched
        connection.execute("DROP TABLE incoming")
    result.inserted += inserted
    result.updated += updated
    result.marked_deleted += deleted


def _texts(values: pd.Series) -> pd.Series:
    """An extra field's values as text, as CSV pages hold them, whatever JSON type REST gave
    them (true, 0.5, "x"): DuckDB then casts one column of one type, never a mix."""
    return values.map(
        lambda value: value if value is None or isinstance(value, str) else json.dumps(value)
    )


@contextmanager
def _naming_bad_values(
    connection: duckdb.DuckDBPyConnection,
    page: pd.DataFrame,
    attrs: Mapping[str, object],
    columns: ContactColumns,
) -> Iterator[None]:
    """Turn a failed cast (after the page's transaction rolled back) into a ContactValueError."""
    try:
        yield
    except (duckdb.ConversionException, duckdb.InvalidInputException) as error:
        raise _bad_value(connection, page, attrs, columns, error) from None


def _bad_value(
    connection: duckdb.DuckDBPyConnection,
    page: pd.DataFrame,
    attrs: Mapping[str, object],
    columns: ContactColumns,
    error: duckdb.Error,
) -> ContactValueError:
    """Which contact, and where in an export, holds the value DuckDB could not cast."""
    field_of = {column: field for field, column in columns.fields.items()}
    connection.register("contact_page", page)  # the rollback dropped it
    for column, kind in columns.casts.items():
        found = connection.execute(
            f'SELECT "{column}" FROM contact_page WHERE "{column}" IS NOT NULL '
            f'AND TRY_CAST("{column}" AS {kind}) IS NULL LIMIT 1'
        ).fetchone()
        if found:
            (value,) = found
            position = int((page[column] == value).to_numpy().argmax())
            where = f"contact {page['id'].iloc[position]}, field {field_of[column]}"
            if "source" in attrs:
                line = int(attrs["first_line"]) + position
                where = f"{attrs['source']}, line {line}, column {field_of[column]}"
            return ContactValueError(f"{where}: {value!r} is not a valid {kind}")
    return ContactValueError(f"A contact value could not be read: {error}")


def _write_cursor(
    connection: duckdb.DuckDBPyConnection, value: datetime, name: str = CURSOR_NAME
) -> None:
    connection.execute(
        "INSERT INTO salesforce_state.cursor VALUES (?, ?, now() AT TIME ZONE 'UTC') "
        "ON CONFLICT (name) DO UPDATE SET system_modstamp = excluded.system_modstamp, "
        "updated_at = excluded.updated_at",
        [name, value],
    )


def _mark_missing_deleted(
    connection: duckdb.DuckDBPyConnection, result: ExtractResult, max_fraction: float
) -> None:
    """Contacts Salesforce no longer returns at all (hard-deleted, purged) are deleted here.

    Runs after the last page has landed, so when the guard refuses, what was read stays.
    """
    live, missing = connection.execute(
        "SELECT count(*), count(*) FILTER (WHERE id NOT IN "
        "(SELECT id FROM salesforce_state.full_refresh_seen)) "
        "FROM raw.salesforce_contact WHERE NOT is_deleted"
    ).fetchone()
    if missing > max_fraction * live:
        raise DeleteGuardError(
            f"The full refresh read {result.rows_fetched} contacts and would mark {missing} of "
            f"the {live} live contacts deleted ({missing / live:.0%}, more than "
            f"SALESFORCE_MAX_DELETE_FRACTION={max_fraction:g}). Contacts the integration user "
            "can no longer see, or the wrong org, look like this, so none were marked deleted "
            "(the contacts read are landed). If they really are gone, set "
            "SALESFORCE_MAX_DELETE_FRACTION=1 for one run."
        )
    with transaction(connection):
        connection.execute(
            "UPDATE raw.salesforce_contact "
            "SET is_deleted = true, loaded_at = now() AT TIME ZONE 'UTC' "
            "WHERE NOT is_deleted AND id NOT IN (SELECT id FROM salesforce_state.full_refresh_seen)"
        )
        connection.execute("DELETE FROM salesforce_state.full_refresh_seen")
        # Every delete before the run started is now applied; later ones come from getDeleted.
        if result.deletes_restart_at is not None:
            _write_cursor(connection, result.deletes_restart_at, DELETED_CURSOR_NAME)
            result.deleted_cursor_after = result.deletes_restart_at
    result.marked_deleted += missing
