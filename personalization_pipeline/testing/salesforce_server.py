"""A local Salesforce-compatible HTTP server for tests and benchmarks.

It speaks the subset of the Salesforce APIs the Contact extractor uses, with the wire shapes of a
real org (see ../shared/reference/salesforce.md): SOAP and OAuth 2.0 logins, Contact describe,
REST query/queryAll with nextRecordsUrl paging, Bulk API 2.0 query jobs, Sforce-Limit-Info and
the JSON error arrays. Unmodified simple-salesforce reaches it through `local_session()`, a
requests.Session whose transport adapter sends every https:// request (login.salesforce.com,
test.salesforce.com, a My Domain, the instance) to http://127.0.0.1:PORT.

Tests drive the org through `SalesforceServer`: insert/update/delete/purge contacts, commit a
record late (with a SystemModstamp older than records already visible), move the org's clock,
purge the delete log that getDeleted reads, expire sessions, set the API usage counter, fail Bulk
jobs and inject 401/403/500 faults or dropped connections for the next N calls.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit, urlunsplit
from xml.dom import minidom

import jwt
import requests
from requests.adapters import HTTPAdapter

ORG_ID = "00DHs000001LoCaLMA"
USER_ID = "005Hs00000AbCdEIAZ"
INSTANCE_HOST = "acme.my.salesforce.com"
SUPPORTED_VERSIONS = tuple(f"{v}.0" for v in range(31, 63))

# Contact fields this org has, in describe order: (name, type, soapType, label, custom, nillable,
# length). Values for fields a test does not set are null, as on a real org.
CONTACT_FIELDS: tuple[tuple[str, str, str, str, bool, bool, int], ...] = (
    ("Id", "id", "tns:ID", "Contact ID", False, False, 18),
    ("IsDeleted", "boolean", "xsd:boolean", "Deleted", False, False, 0),
    ("AccountId", "reference", "tns:ID", "Account ID", False, True, 18),
    ("LastName", "string", "xsd:string", "Last Name", False, False, 80),
    ("FirstName", "string", "xsd:string", "First Name", False, True, 40),
    ("Name", "string", "xsd:string", "Full Name", False, False, 121),
    ("Phone", "phone", "xsd:string", "Business Phone", False, True, 40),
    ("Email", "email", "xsd:string", "Email", False, True, 80),
    ("Birthdate", "date", "xsd:date", "Birthdate", False, True, 0),
    ("MailingStreet", "textarea", "xsd:string", "Mailing Street", False, True, 255),
    ("MailingCity", "string", "xsd:string", "Mailing City", False, True, 40),
    ("MailingPostalCode", "string", "xsd:string", "Mailing Zip/Postal Code", False, True, 20),
    ("MailingCountry", "string", "xsd:string", "Mailing Country", False, True, 80),
    ("MailingAddress", "address", "urn:address", "Mailing Address", False, True, 0),
    ("CreatedDate", "datetime", "xsd:dateTime", "Created Date", False, False, 0),
    ("LastModifiedDate", "datetime", "xsd:dateTime", "Last Modified Date", False, False, 0),
    ("SystemModstamp", "datetime", "xsd:dateTime", "System Modstamp", False, False, 0),
    ("App_User_Id__c", "string", "xsd:string", "App User Id", True, True, 64),
    ("Membership_Status__c", "picklist", "xsd:string", "Membership Status", True, True, 255),
    # Custom fields an org adds for its own data, landed only through SALESFORCE_EXTRA_FIELDS.
    ("Churn_Score__c", "double", "xsd:double", "Churn Score", True, True, 0),
    ("Lifetime_Value__c", "currency", "xsd:double", "Lifetime Value", True, True, 0),
    ("Newsletter_Opt_In__c", "boolean", "xsd:boolean", "Newsletter Opt In", True, False, 0),
)
# A compound field is listed beside its components, which name it in compoundFieldName. REST
# returns it as a nested object; a Bulk query refuses it.
COMPOUND_FIELDS = {
    "MailingAddress": {
        "street": "MailingStreet",
        "city": "MailingCity",
        "postalCode": "MailingPostalCode",
        "country": "MailingCountry",
    }
}
COMPOUND_OF = {part: name for name, parts in COMPOUND_FIELDS.items() for part in parts.values()}
FIELD_TYPES = {name: ftype for name, ftype, *_ in CONTACT_FIELDS}
FIELD_BY_LOWER = {name.lower(): name for name in FIELD_TYPES}
MEMBERSHIP_VALUES = ("Active", "Lapsed", "Trial", "Cancelled")
WRITABLE = {
    "AccountId",
    "LastName",
    "FirstName",
    "Phone",
    "Email",
    "Birthdate",
    "App_User_Id__c",
    "Membership_Status__c",
    "MailingStreet",
    "MailingCity",
    "MailingPostalCode",
    "MailingCountry",
    "Churn_Score__c",
    "Lifetime_Value__c",
    "Newsletter_Opt_In__c",
}

_ID_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def salesforce_id(prefix: str, number: int) -> str:
    """An 18-character id: 15 case-sensitive characters plus Salesforce's case-safe suffix."""
    digits = ""
    for _ in range(5):
        number, rem = divmod(number, 62)
        digits = _BASE62[rem] + digits
    short = f"{prefix}Hs00000{digits}"
    suffix = ""
    for chunk in (short[0:5], short[5:10], short[10:15]):
        bits = sum(1 << i for i, ch in enumerate(chunk) if "A" <= ch <= "Z")
        suffix += _ID_SUFFIX_ALPHABET[bits]
    return short + suffix


def rest_datetime(value: datetime) -> str:
    """REST datetimes: UTC, three millisecond digits, +0000 without a colon."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def bulk_datetime(value: datetime) -> str:
    """Bulk 2.0 CSV datetimes use a Z suffix instead of +0000."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def now_ms() -> datetime:
    """Salesforce keeps datetimes at millisecond precision."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def to_minute(value: datetime) -> datetime:
    """getDeleted ignores seconds, and answers in whole minutes."""
    return value.replace(second=0, microsecond=0)


# getDeleted: a window may start at most 30 days back; the delete log keeps 15 days.
REPLICATION_WINDOW = timedelta(days=30)
DELETE_LOG_RETENTION = timedelta(days=15)


# --- SOQL ------------------------------------------------------------------------------------


class SoqlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_TOKEN = re.compile(
    r"\s*(?:(?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2}))"
    r"|(?P<date>\d{4}-\d{2}-\d{2})"
    r"|(?P<number>-?\d+(?:\.\d+)?)"
    r"|(?P<string>'(?:[^'\\]|\\.)*')"
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_.]*)"
    r"|(?P<op><=|>=|!=|<>|=|<|>)"
    r"|(?P<punct>[(),*]))"
)


@dataclass
class Token:
    kind: str
    text: str
    column: int  # 1-based, as Salesforce reports it


def tokenize(soql: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(soql):
        if soql[pos:].strip() == "":
            break
        match = _TOKEN.match(soql, pos)
        if match is None or match.lastgroup is None:
            bad = soql[pos:].strip().split()[0]
            raise SoqlError(
                "MALFORMED_QUERY",
                caret(soql, len(soql) - len(soql[pos:].lstrip()) + 1, f"unexpected token: '{bad}'"),
            )
        start = match.start(match.lastgroup)
        tokens.append(Token(match.lastgroup, match.group(match.lastgroup), start + 1))
        pos = match.end()
    return tokens


def caret(soql: str, column: int, message: str) -> str:
    """Salesforce's positioned error format: the query, a caret under the column, then the text."""
    return f"\n{soql}\n{' ' * (column - 1)}^\nERROR at Row:1:Column:{column}\n{message}"


def parse_literal(token: Token, soql: str) -> Any:
    if token.kind == "datetime":
        text = token.text
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        elif re.search(r"[+-]\d{4}$", text):
            text = text[:-2] + ":" + text[-2:]
        return datetime.fromisoformat(text).astimezone(UTC)
    if token.kind == "date":
        return datetime.fromisoformat(token.text).date()
    if token.kind == "number":
        return float(token.text)
    if token.kind == "string":
        return token.text[1:-1].replace("\\'", "'")
    if token.kind == "ident" and token.text.upper() in ("TRUE", "FALSE"):
        return token.text.upper() == "TRUE"
    if token.kind == "ident" and token.text.upper() == "NULL":
        return None
    raise SoqlError("MALFORMED_QUERY", caret(soql, token.column, f"unexpected token: {token.text}"))


@dataclass
class Query:
    soql: str
    fields: list[str]  # canonical names in SELECT order; empty for COUNT()
    count_only: bool = False
    aggregates: list[tuple[str, str]] = field(default_factory=list)  # (function, field)
    conditions: list[tuple[str, str, Any]] = field(default_factory=list)
    order_by: tuple[str, bool] | None = None  # (field, descending)
    limit: int | None = None


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<>": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def parse_soql(soql: str) -> Query:
    """Parse the SOQL subset the extractor emits; anything else is MALFORMED_QUERY."""
    tokens = tokenize(soql)
    if not tokens or tokens[0].text.upper() != "SELECT":
        first = tokens[0].text if tokens else "<EOF>"
        raise SoqlError("MALFORMED_QUERY", f"unexpected token: {first}")
    pos = 1

    def peek(offset: int = 0) -> Token | None:
        return tokens[pos + offset] if pos + offset < len(tokens) else None

    def unexpected(token: Token | None) -> SoqlError:
        if token is None:
            return SoqlError(
                "MALFORMED_QUERY", caret(soql, len(soql) + 1, "unexpected token: <EOF>")
            )
        return SoqlError(
            "MALFORMED_QUERY", caret(soql, token.column, f"unexpected token: {token.text}")
        )

    def expect(text: str) -> Token:
        nonlocal pos
        token = peek()
        if token is None or token.text.upper() != text:
            raise unexpected(token)
        pos += 1
        return token

    query = Query(soql=soql, fields=[])
    raw_fields: list[Token] = []
    while True:
        token = peek()
        if token is None or token.kind != "ident":
            raise unexpected(token)
        if token.text.upper() in ("COUNT", "MAX", "MIN") and (nxt := peek(1)) and nxt.text == "(":
            pos += 2
            if token.text.upper() == "COUNT" and (close := peek()) and close.text == ")":
                pos += 1
                query.count_only = True
            else:
                arg = peek()
                if arg is None or arg.kind != "ident":
                    raise unexpected(arg)
                pos += 1
                expect(")")
                raw_fields.append(arg)
                query.aggregates.append((token.text.upper(), arg.text))
        else:
            raw_fields.append(token)
            pos += 1
        if (comma := peek()) and comma.text == ",":
            pos += 1
            continue
        break
    expect("FROM")
    entity = peek()
    if entity is None or entity.kind != "ident":
        raise unexpected(entity)
    pos += 1
    if entity.text.lower() != "contact":
        raise SoqlError(
            "INVALID_TYPE",
            caret(
                soql,
                entity.column,
                f"sObject type '{entity.text}' is not supported. If you are attempting to use a "
                "custom object, be sure to append the '__c' after the entity name. Please "
                "reference your WSDL or the describe call for the appropriate names.",
            ),
        )

    def field_name(token: Token) -> str:
        name = FIELD_BY_LOWER.get(token.text.lower())
        if name is None:
            raise SoqlError(
                "INVALID_FIELD",
                caret(
                    soql,
                    token.column,
                    f"No such column '{token.text}' on entity '{entity.text}'. If you are "
                    "attempting to use a custom field, be sure to append the '__c' after the "
                    "custom field name. Please reference your WSDL or the describe call for "
                    "the appropriate names.",
                ),
            )
        return name

    if query.aggregates:
        query.aggregates = [
            (fn, field_name(tok)) for (fn, _), tok in zip(query.aggregates, raw_fields, strict=True)
        ]
    else:
        query.fields = [field_name(tok) for tok in raw_fields]

    if (where := peek()) and where.text.upper() == "WHERE":
        pos += 1
        while True:
            name_tok = peek()
            if name_tok is None or name_tok.kind != "ident":
                raise unexpected(name_tok)
            pos += 1
            name = field_name(name_tok)
            op = peek()
            if op is None or op.kind != "op":
                raise unexpected(op)
            pos += 1
            literal_tok = peek()
            if literal_tok is None:
                raise unexpected(None)
            pos += 1
            value = parse_literal(literal_tok, soql)
            if (
                FIELD_TYPES[name] == "datetime"
                and literal_tok.kind != "datetime"
                and value is not None
            ):
                raise SoqlError(
                    "INVALID_QUERY_FILTER_OPERATOR",
                    caret(
                        soql,
                        literal_tok.column,
                        f"value of filter criterion for field '{name}' must be of type dateTime "
                        "and should not be enclosed in quotes",
                    ),
                )
            query.conditions.append((name, op.text, value))
            if (conj := peek()) and conj.text.upper() == "AND":
                pos += 1
                continue
            break
    if (order := peek()) and order.text.upper() == "ORDER":
        pos += 1
        expect("BY")
        name_tok = peek()
        if name_tok is None or name_tok.kind != "ident":
            raise unexpected(name_tok)
        pos += 1
        descending = False
        if (direction := peek()) and direction.text.upper() in ("ASC", "DESC"):
            pos += 1
            descending = direction.text.upper() == "DESC"
        query.order_by = (field_name(name_tok), descending)
    if (limit := peek()) and limit.text.upper() == "LIMIT":
        pos += 1
        number = peek()
        if number is None or number.kind != "number":
            raise unexpected(number)
        pos += 1
        query.limit = int(float(number.text))
    if peek() is not None:
        raise unexpected(peek())
    return query


# --- the org -------------------------------------------------------------------------------


@dataclass
class Credentials:
    """What this org accepts at login. Defaults are throwaway test values."""

    username: str = "integration@acme.example"
    password: str = "correct horse"
    security_token: str = "TOKEN123"
    consumer_key: str = "3MVG9local.consumer.key"
    consumer_secret: str = "local-consumer-secret"
    jwt_public_key_pem: bytes | None = None


@dataclass
class Fault:
    kind: str  # expired_session | server_error | request_limit | drop
    times: int
    after: int
    path_contains: str | None


@dataclass
class QueryCursor:
    rows: list[tuple[Any, ...]]
    fields: list[str]
    total: int
    batch: int
    api_version: str


@dataclass
class BulkJob:
    id: str
    operation: str
    soql: str
    fields: list[str]
    rows: list[tuple[Any, ...]]
    created: datetime
    api_version: str
    polls_left: int
    state: str = "UploadComplete"
    outcome: str = "JobComplete"  # the state it ends in: JobComplete, Failed or Aborted
    error_message: str | None = None


class SalesforceOrg:
    """The in-memory state: contacts, sessions, API usage, query cursors and bulk jobs."""

    def __init__(self, credentials: Credentials | None = None, api_limit: int = 100_000) -> None:
        self.credentials = credentials or Credentials()
        self.lock = threading.RLock()
        self.contacts: dict[str, dict[str, Any]] = {}
        self.sessions: set[str] = set()
        self.api_used = 0
        self.api_limit = api_limit
        self.faults: list[Fault] = []
        self.cursors: dict[str, QueryCursor] = {}
        self.jobs: dict[str, BulkJob] = {}
        self.bulk_polls_before_complete = 1
        self.bulk_failures: list[tuple[str, str | None]] = []  # (outcome, errorMessage) per job
        self.requests: list[tuple[str, str, str]] = []  # (method, original host, path)
        self.clock_offset = timedelta(0)
        self.deleted_id_limit = 600_000  # getDeleted refuses larger answers (EXCEEDED_ID_LIMIT)
        # getDeleted's log: id -> deletedDate; and the newest deletedDate purged from it.
        self.delete_log: dict[str, datetime] = {}
        # As for an org that has run longer than the retention without a purge.
        self.delete_log_purged_through = self.now() - DELETE_LOG_RETENTION
        self.logins: list[str] = []  # flow names, in order
        self._numbers = itertools.count(1)

    # -- data a test changes --
    def insert(self, modstamp: datetime | None = None, **values: Any) -> str:
        """Create a contact; `modstamp` lets a test commit it late (an older SystemModstamp)."""
        unknown = set(values) - WRITABLE
        if unknown:
            raise ValueError(f"not writable on this test org: {sorted(unknown)}")
        with self.lock:
            record_id = salesforce_id("003", next(self._numbers))
            stamp = modstamp or self.now()
            record = dict.fromkeys(FIELD_TYPES)
            record.update(
                Id=record_id,
                IsDeleted=False,
                CreatedDate=stamp,
                LastModifiedDate=stamp,
                SystemModstamp=stamp,
                LastName="Unknown",
                # Checkboxes are never null on a real org.
                Newsletter_Opt_In__c=False,
            )
            record.update(values)
            record["Name"] = " ".join(p for p in (record["FirstName"], record["LastName"]) if p)
            self.contacts[record_id] = record
            return record_id

    def insert_many(self, count: int, modstamp: datetime | None = None) -> list[str]:
        """Bulk-create numbered contacts quickly (for paging tests and the benchmark)."""
        ids = []
        for _ in range(count):
            number = len(self.contacts) + 1
            ids.append(
                self.insert(
                    modstamp=modstamp,
                    FirstName=f"First{number}",
                    LastName=f"Last{number}",
                    Email=f"user{number}@example.com",
                    App_User_Id__c=f"u{number}",
                    Membership_Status__c=MEMBERSHIP_VALUES[number % len(MEMBERSHIP_VALUES)],
                )
            )
        return ids

    def update(self, record_id: str, modstamp: datetime | None = None, **values: Any) -> None:
        unknown = set(values) - WRITABLE
        if unknown:
            raise ValueError(f"not writable on this test org: {sorted(unknown)}")
        with self.lock:
            record = self.contacts[record_id]
            record.update(values)
            record["Name"] = " ".join(p for p in (record["FirstName"], record["LastName"]) if p)
            record["LastModifiedDate"] = record["SystemModstamp"] = modstamp or self.now()

    def delete(self, record_id: str) -> None:
        """Soft delete: the row moves to the Recycle Bin and stays visible to queryAll; the
        delete log records it with the new SystemModstamp as deletedDate."""
        with self.lock:
            record = self.contacts[record_id]
            record["IsDeleted"] = True
            record["SystemModstamp"] = self.delete_log[record_id] = self.now()

    def undelete(self, record_id: str) -> None:
        """Restore from the Recycle Bin. The delete log keeps its entry here, the case a reader
        of getDeleted must survive."""
        with self.lock:
            record = self.contacts[record_id]
            record["IsDeleted"] = False
            record["SystemModstamp"] = self.now()

    def purge(self, record_id: str) -> None:
        """Hard delete, or a Recycle Bin purge: the row disappears even from queryAll. A live
        record's hard delete enters the delete log now; a purged soft delete is already there."""
        with self.lock:
            del self.contacts[record_id]
            self.delete_log.setdefault(record_id, self.now())

    # -- time --
    def now(self) -> datetime:
        return now_ms() + self.clock_offset

    def advance(self, **delta: float) -> None:
        """Move the org's clock forward (timedelta keywords), as if that much time passed."""
        with self.lock:
            self.clock_offset += timedelta(**delta)

    def advance_to_next_minute(self) -> None:
        """Move the clock just past the next whole minute: a test then has most of a minute
        before what getDeleted covers (whole minutes only) moves on."""
        with self.lock:
            now = self.now()
            self.clock_offset += to_minute(now) + timedelta(minutes=1, milliseconds=100) - now

    def purge_delete_log(self) -> None:
        """What Salesforce's background job does to a delete log past its size limit: drop
        every entry, so getDeleted's earliestDateAvailable moves up to now."""
        with self.lock:
            self.delete_log.clear()
            self.delete_log_purged_through = self.now()

    def deleted_between(self, start: datetime, end: datetime) -> dict[str, Any]:
        """getDeleted: ids deleted in [start, end), whole minutes, after the 15-day retention."""
        with self.lock:
            now = self.now()
            expired = {i: d for i, d in self.delete_log.items() if d < now - DELETE_LOG_RETENTION}
            for record_id, deleted in expired.items():
                del self.delete_log[record_id]
                self.delete_log_purged_through = max(self.delete_log_purged_through, deleted)
            covered = min(to_minute(end), to_minute(now))
            records = sorted(
                (d, i) for i, d in self.delete_log.items() if to_minute(start) <= d < covered
            )
            # The minute after the newest purged entry: from there on the log is complete.
            earliest = to_minute(self.delete_log_purged_through) + timedelta(minutes=1)
            return {
                "deletedRecords": [{"id": i, "deletedDate": rest_datetime(d)} for d, i in records],
                "earliestDateAvailable": rest_datetime(earliest),
                "latestDateCovered": rest_datetime(covered),
            }

    # -- faults and limits --
    def inject(
        self, kind: str, times: int = 1, after: int = 0, path_contains: str | None = None
    ) -> None:
        """Fail `times` API calls, starting after `after` more calls (optionally only on paths
        containing `path_contains`). Kinds: expired_session (revokes every session),
        server_error (500 UNKNOWN_EXCEPTION), request_limit (403 REQUEST_LIMIT_EXCEEDED),
        drop (close the connection without answering)."""
        if kind not in ("expired_session", "server_error", "request_limit", "drop"):
            raise ValueError(kind)
        with self.lock:
            self.faults.append(Fault(kind, times, after, path_contains))

    def fail_bulk_jobs(
        self,
        times: int = 1,
        state: str = "Failed",
        message: str = "InternalServerError : Retry the request. If the issue persists, contact "
        "Salesforce Customer Support.",
    ) -> None:
        """The next `times` Bulk 2.0 jobs end Failed (with `message`) or Aborted, not complete."""
        with self.lock:
            self.bulk_failures.extend([(state, message if state == "Failed" else None)] * times)

    def expire_sessions(self) -> None:
        with self.lock:
            self.sessions.clear()

    def set_api_usage(self, used: int, limit: int | None = None) -> None:
        with self.lock:
            self.api_used = used
            if limit is not None:
                self.api_limit = limit

    def api_calls(self, path_contains: str = "/services/data/") -> int:
        return sum(1 for _, _, path in self.requests if path_contains in path)

    # -- sessions --
    def new_session(self, flow: str) -> str:
        token = f"{ORG_ID[:15]}!AQ{secrets.token_urlsafe(48)}"
        with self.lock:
            self.sessions.add(token)
            self.logins.append(flow)
        return token

    # -- query execution --
    def select(self, query: Query, include_deleted: bool) -> list[tuple[Any, ...]]:
        with self.lock:
            records = [r for r in self.contacts.values() if include_deleted or not r["IsDeleted"]]
            for name, op, value in query.conditions:
                compare = _OPS[op]
                if value is None:
                    records = [r for r in records if compare(r[name], None)]
                else:
                    records = [
                        r for r in records if r[name] is not None and compare(r[name], value)
                    ]
            if query.order_by:
                name, descending = query.order_by
                # Salesforce sorts nulls first in ascending order.
                records.sort(
                    key=lambda r: (r[name] is not None, r[name] if r[name] is not None else 0),
                    reverse=descending,
                )
            if query.limit is not None:
                records = records[: query.limit]
            # Each row starts with the Id (for attributes.url), then the selected fields.
            return [(r["Id"], *(field_value(r, f) for f in query.fields)) for r in records]


def field_value(record: dict[str, Any], name: str) -> Any:
    """A stored value; a compound field is built from its components, as REST returns it."""
    if name not in COMPOUND_FIELDS:
        return record[name]
    parts = {key: record[part] for key, part in COMPOUND_FIELDS[name].items()}
    if not any(parts.values()):
        return None
    return {**parts, "state": None, "geocodeAccuracy": None, "latitude": None, "longitude": None}


# --- HTTP -----------------------------------------------------------------------------------


def rest_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return rest_datetime(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _csv_cell(value: Any) -> str:
    """Bulk 2.0 CSV: every value quoted, quotes doubled, nulls as bare empty cells."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, datetime):
        text = bulk_datetime(value)
    elif hasattr(value, "isoformat"):
        text = value.isoformat()
    else:
        text = str(value)
    return '"' + text.replace('"', '""') + '"'


def error_body(code: str, message: str) -> list[dict[str, str]]:
    return [{"message": message, "errorCode": code}]


class _Reply(Exception):
    """Raised inside a handler to answer immediately."""

    def __init__(
        self,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json;charset=UTF-8",
    ) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.content_type = content_type


class _Drop(Exception):
    """Close the connection without an answer (a connection reset for the client)."""


_DATA_PATH = re.compile(r"^/services/data/v(?P<version>\d+\.\d+)/(?P<rest>.*)$")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LocalSalesforceHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read state instead
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing --
    def _dispatch(self, method: str) -> None:
        org = self.server.org
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        self.query_params = parse_qs(parts.query, keep_blank_values=True)
        host = self.headers.get("X-Original-Host", self.headers.get("Host", ""))
        with org.lock:
            org.requests.append((method, host, parts.path))
        try:
            if parts.path.startswith("/services/Soap/u/") and method == "POST":
                self._soap_login(parts.path)
            elif parts.path == "/services/oauth2/token" and method == "POST":
                self._oauth_token()
            elif (match := _DATA_PATH.match(parts.path)) is not None:
                self._api(method, match["version"], match["rest"].rstrip("/"))
            else:
                raise _Reply(404, error_body("NOT_FOUND", "The requested resource does not exist"))
        except _Drop:
            self.close_connection = True
            return
        except _Reply as reply:
            self._send(reply)

    def _send(self, reply: _Reply) -> None:
        if isinstance(reply.body, bytes):
            payload = reply.body
        elif isinstance(reply.body, str):
            payload = reply.body.encode()
        elif self.headers.get("X-PrettyPrint") == "1":
            payload = json.dumps(reply.body, indent=2, separators=(",", " : ")).encode()
        else:
            payload = json.dumps(reply.body, separators=(",", ":")).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
        self.send_header("Vary", "Accept-Encoding")
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    # -- logins --
    def _soap_login(self, path: str) -> None:
        org = self.server.org
        version = path.rsplit("/", 1)[-1]
        try:
            doc = minidom.parseString(self.body)
            username = _xml_text(doc, "username")
            password = _xml_text(doc, "password")
        except Exception:
            username = password = None
        creds = org.credentials
        if username != creds.username or password != creds.password + creds.security_token:
            raise _Reply(500, _SOAP_FAULT, content_type="text/xml;charset=UTF-8")
        session = org.new_session("soap")
        server_url = f"https://{INSTANCE_HOST}/services/Soap/u/{version}/{ORG_ID[:15]}"
        body = _SOAP_SUCCESS.format(
            metadata_url=f"https://{INSTANCE_HOST}/services/Soap/m/{version}/{ORG_ID[:15]}",
            server_url=server_url,
            session=session,
            user_id=USER_ID,
            org_id=ORG_ID,
            username=creds.username,
        )
        raise _Reply(200, body, content_type="text/xml;charset=UTF-8")

    def _oauth_token(self) -> None:
        org = self.server.org
        creds = org.credentials
        form = {k: v[0] for k, v in parse_qs(self.body.decode()).items()}
        grant = form.get("grant_type")
        invalid_grant = _Reply(
            400, {"error": "invalid_grant", "error_description": "authentication failure"}
        )
        if grant == "password":
            if (
                form.get("client_id") != creds.consumer_key
                or form.get("client_secret") != creds.consumer_secret
            ):
                raise _Reply(
                    400,
                    {
                        "error": "invalid_client_id",
                        "error_description": "client identifier invalid",
                    },
                )
            if form.get("username") != creds.username or form.get("password") not in (
                creds.password,
                creds.password + creds.security_token,
            ):
                raise invalid_grant
            flow = "oauth_password"
        elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            if creds.jwt_public_key_pem is None:
                raise invalid_grant
            try:
                # simple-salesforce sends exp as a string, so PyJWT's numeric check is skipped
                # and the expiry is checked here.
                claims = jwt.decode(
                    form.get("assertion", ""),
                    creds.jwt_public_key_pem,
                    algorithms=["RS256"],
                    options={"verify_exp": False, "verify_aud": False},
                )
            except jwt.PyJWTError:
                raise invalid_grant from None
            if claims.get("iss") != creds.consumer_key:
                raise _Reply(
                    400,
                    {
                        "error": "invalid_client_id",
                        "error_description": "client identifier invalid",
                    },
                )
            if claims.get("sub") != creds.username or float(claims.get("exp", 0)) < time.time():
                raise invalid_grant
            flow = "jwt_bearer"
        elif grant == "client_credentials":
            auth = self.headers.get("Authorization", "")
            expected = base64.b64encode(
                f"{creds.consumer_key}:{creds.consumer_secret}".encode()
            ).decode()
            host = self.headers.get("X-Original-Host", "")
            if host.split(":")[0] in ("login.salesforce.com", "test.salesforce.com"):
                raise _Reply(
                    400,
                    {
                        "error": "invalid_grant",
                        "error_description": "request not supported on this domain",
                    },
                )
            if auth != f"Basic {expected}":
                raise _Reply(
                    400,
                    {"error": "invalid_client", "error_description": "invalid client credentials"},
                )
            flow = "client_credentials"
        else:
            raise _Reply(
                400,
                {
                    "error": "unsupported_grant_type",
                    "error_description": "grant type not supported",
                },
            )
        token = org.new_session(flow)
        issued_at = str(int(time.time() * 1000))
        instance_url = f"https://{INSTANCE_HOST}"
        identity = f"https://login.salesforce.com/id/{ORG_ID}/{USER_ID}"
        signature = base64.b64encode(
            hmac.new(
                creds.consumer_secret.encode(), (identity + issued_at).encode(), hashlib.sha256
            ).digest()
        ).decode()
        body: dict[str, Any] = {"access_token": token}
        if flow == "client_credentials":
            body["signature"] = signature
            body["scope"] = "api"
            body["instance_url"] = instance_url
            body["id"] = identity
            body["token_type"] = "Bearer"
            body["issued_at"] = issued_at
        else:
            body.update(
                instance_url=instance_url,
                id=identity,
                token_type="Bearer",
                issued_at=issued_at,
                signature=signature,
            )
        raise _Reply(200, body)

    # -- the REST API --
    def _api(self, method: str, version: str, rest: str) -> None:
        org = self.server.org
        if version not in SUPPORTED_VERSIONS:
            raise _Reply(
                404,
                [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}],
            )
        auth = self.headers.get("Authorization", "")
        with org.lock:
            fault = self._take_fault()
            if fault == "expired_session":
                org.sessions.clear()
            if not auth.startswith("Bearer ") or auth[7:] not in org.sessions:
                raise _Reply(
                    401,
                    error_body("INVALID_SESSION_ID", "Session expired or invalid"),
                    headers={"WWW-Authenticate": "Token"},
                )
            if fault == "drop":
                raise _Drop()
            if fault == "server_error" or fault == "request_limit":
                raise self._fault_reply(fault)
            if org.api_used >= org.api_limit:
                raise self._fault_reply("request_limit")
            org.api_used += 1
            limit_info = {"Sforce-Limit-Info": f"api-usage={org.api_used}/{org.api_limit}"}
        try:
            self._route(method, version, rest)
        except _Reply as reply:
            if reply.status < 300:
                reply.headers.update(limit_info)
            raise

    def _take_fault(self) -> str | None:
        org = self.server.org
        for fault in org.faults:
            if fault.path_contains and fault.path_contains not in self.path:
                continue
            if fault.after > 0:
                fault.after -= 1
                continue
            fault.times -= 1
            if fault.times <= 0:
                org.faults.remove(fault)
            return fault.kind
        return None

    @staticmethod
    def _fault_reply(kind: str) -> _Reply:
        if kind == "request_limit":
            return _Reply(
                403, error_body("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            )
        error_id = (
            f"{secrets.randbelow(10**9)}-{secrets.randbelow(10**6)} ({secrets.randbelow(10**9)})"
        )
        return _Reply(
            500,
            error_body(
                "UNKNOWN_EXCEPTION",
                "An unexpected error occurred. Please include this ErrorId if you contact support: "
                + error_id,
            ),
        )

    def _route(self, method: str, version: str, rest: str) -> None:
        if method == "GET" and rest == "sobjects/Contact/describe":
            raise _Reply(200, contact_describe(version))
        if method == "GET" and rest == "sobjects/Contact/deleted":
            self._deleted()
        if method == "GET" and rest in ("query", "queryAll"):
            self._query(version, include_deleted=rest == "queryAll")
        if method == "GET" and (m := re.fullmatch(r"(?:query|queryAll)/(01g[\w-]+)", rest)):
            self._query_more(m[1])
        if rest == "jobs/query" and method == "POST":
            self._bulk_create(version)
        if m := re.fullmatch(r"jobs/query/(750\w+)(/results)?", rest):
            job = self.server.org.jobs.get(m[1])
            if job is None:
                raise _Reply(
                    404,
                    [
                        {
                            "errorCode": "NOT_FOUND",
                            "message": "The requested resource does not exist",
                        }
                    ],
                )
            if method == "GET" and m[2]:
                self._bulk_results(job, version)
            if method == "GET":
                self._bulk_status(job)
            if method == "PATCH":
                job.state = json.loads(self.body)["state"]
                raise _Reply(200, job_info(job))
            if method == "DELETE":
                del self.server.org.jobs[job.id]
                raise _Reply(204, b"")
        raise _Reply(
            404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
        )

    def _deleted(self) -> None:
        org = self.server.org
        try:
            start, end = (
                datetime.fromisoformat(self.query_params[name][0]).astimezone(UTC)
                for name in ("start", "end")
            )
        except (KeyError, ValueError):
            raise _Reply(
                400, error_body("INVALID_REPLICATION_DATE", "start and end must be dateTimes")
            ) from None
        if to_minute(end) - to_minute(start) < timedelta(minutes=1):
            # Salesforce's own wording, start and end swapped as in the original.
            raise _Reply(
                400,
                error_body(
                    "INVALID_REPLICATION_DATE",
                    "startDate must be at least one minute greater than endDate",
                ),
            )
        if start < org.now() - REPLICATION_WINDOW:
            raise _Reply(
                400,
                error_body("INVALID_REPLICATION_DATE", "startDate cannot be more than 30 days ago"),
            )
        answer = org.deleted_between(start, end)
        if len(answer["deletedRecords"]) > org.deleted_id_limit:
            raise _Reply(
                400,
                error_body(
                    "EXCEEDED_ID_LIMIT",
                    f"More than {org.deleted_id_limit} ids were found; choose start and end "
                    "dates that are closer together",
                ),
            )
        raise _Reply(200, answer)

    def _parse(self, soql: str) -> Query:
        try:
            return parse_soql(soql)
        except SoqlError as exc:
            raise _Reply(400, error_body(exc.code, exc.message)) from None

    def _query(self, version: str, include_deleted: bool) -> None:
        org = self.server.org
        soql = self.query_params.get("q", [""])[0]
        query = self._parse(soql)
        rows = org.select(query, include_deleted)
        if query.count_only:
            raise _Reply(200, {"totalSize": len(rows), "done": True, "records": []})
        if query.aggregates:
            full = org.select(
                Query(soql, [name for _, name in query.aggregates], conditions=query.conditions),
                include_deleted,
            )
            record: dict[str, Any] = {"attributes": {"type": "AggregateResult"}}
            for index, (fn, _) in enumerate(query.aggregates):
                values = [row[index + 1] for row in full if row[index + 1] is not None]
                picked = (max if fn == "MAX" else min)(values) if values else None
                record[f"expr{index}"] = rest_value(picked)
            raise _Reply(200, {"totalSize": 1, "done": True, "records": [record]})
        batch = 2000
        options = self.headers.get("Sforce-Query-Options", "")
        if m := re.search(r"batchSize=(\d+)", options):
            batch = min(2000, max(200, int(m[1])))
        cursor = QueryCursor(rows, query.fields, len(rows), batch, version)
        self._page(cursor, 0, f"01g{secrets.token_hex(8)[:15]}")

    def _query_more(self, locator: str) -> None:
        org = self.server.org
        cursor_id, _, offset = locator.rpartition("-")
        with org.lock:
            cursor = org.cursors.get(cursor_id)
        if cursor is None or not offset.isdigit():
            raise _Reply(400, error_body("INVALID_QUERY_LOCATOR", "invalid query locator"))
        self._page(cursor, int(offset), cursor_id)

    def _page(self, cursor: QueryCursor, offset: int, cursor_id: str) -> None:
        org = self.server.org
        end = offset + cursor.batch
        records = []
        for row in cursor.rows[offset:end]:
            record: dict[str, Any] = {
                "attributes": {
                    "type": "Contact",
                    "url": f"/services/data/v{cursor.api_version}/sobjects/Contact/{row[0]}",
                }
            }
            for name, value in zip(cursor.fields, row[1:], strict=True):
                record[name] = rest_value(value)
            records.append(record)
        body: dict[str, Any] = {"totalSize": cursor.total, "done": end >= cursor.total}
        with org.lock:
            if end < cursor.total:
                org.cursors[cursor_id] = cursor
                # The locator path always says /query/, even for queryAll.
                body["nextRecordsUrl"] = (
                    f"/services/data/v{cursor.api_version}/query/{cursor_id}-{end}"
                )
            else:
                org.cursors.pop(cursor_id, None)
        body["records"] = records
        raise _Reply(200, body)

    # -- Bulk API 2.0 --
    def _bulk_create(self, version: str) -> None:
        org = self.server.org
        payload = json.loads(self.body or b"{}")
        operation = payload.get("operation")
        if operation not in ("query", "queryAll"):
            raise _Reply(400, error_body("INVALIDJOB", f"Invalid operation: {operation}"))
        query = self._parse(payload.get("query", ""))
        if query.count_only or query.aggregates:
            raise _Reply(
                400, error_body("API_ERROR", "Aggregate Relationships not supported in Bulk Query")
            )
        if any(name in COMPOUND_FIELDS for name in query.fields):
            raise _Reply(
                400, error_body("API_ERROR", "Selecting compound data not supported in Bulk Query")
            )
        rows = org.select(query, include_deleted=operation == "queryAll")
        with org.lock:
            job = BulkJob(
                id=salesforce_id("750", next(org._numbers)),
                operation=operation,
                soql=query.soql,
                fields=query.fields,
                rows=rows,
                created=org.now(),
                api_version=version,
                polls_left=org.bulk_polls_before_complete,
            )
            if org.bulk_failures:
                job.outcome, job.error_message = org.bulk_failures.pop(0)
            org.jobs[job.id] = job
        raise _Reply(200, job_info(job))

    def _bulk_status(self, job: BulkJob) -> None:
        if job.state in ("UploadComplete", "InProgress"):
            if job.polls_left > 0:
                job.polls_left -= 1
                job.state = "InProgress"
            else:
                job.state = job.outcome
        raise _Reply(200, job_info(job))

    def _bulk_results(self, job: BulkJob, version: str) -> None:
        if version != job.api_version:
            raise _Reply(
                409, error_body("INVALIDJOBSTATE", "Job is not accessible with this API version")
            )
        if job.state != "JobComplete":
            raise _Reply(412, error_body("JOB_NOT_COMPLETE", "Job is not complete"))
        max_records = int(self.query_params.get("maxRecords", ["50000"])[0])
        locator = self.query_params.get("locator", [""])[0]
        offset = (
            int(base64.b64decode(locator + "=" * (-len(locator) % 4)).decode()) if locator else 0
        )
        end = offset + max_records
        lines = [",".join(_csv_cell(name) for name in job.fields)]
        lines.extend(
            ",".join(_csv_cell(value) for value in row[1:]) for row in job.rows[offset:end]
        )
        text = "\n".join(lines) + "\n"
        next_locator = (
            base64.b64encode(str(end).encode()).decode().rstrip("=")
            if end < len(job.rows)
            else "null"
        )
        raise _Reply(
            200,
            text,
            content_type="text/csv",
            headers={
                "Sforce-Locator": next_locator,
                "Sforce-NumberOfRecords": str(len(job.rows[offset:end])),
            },
        )


def job_info(job: BulkJob) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": job.id,
        "operation": job.operation,
        "object": "Contact",
        "createdById": USER_ID,
        "createdDate": rest_datetime(job.created),
        "systemModstamp": rest_datetime(job.created),
        "state": job.state,
        "concurrencyMode": "Parallel",
        "contentType": "CSV",
        "apiVersion": float(job.api_version),
        "jobType": "V2Query",
        "lineEnding": "LF",
        "columnDelimiter": "COMMA",
    }
    if job.state == "JobComplete":
        body["numberRecordsProcessed"] = len(job.rows)
        body["retries"] = 0
        body["totalProcessingTime"] = 42
        body["isPkChunkingSupported"] = True
    if job.state == "Failed":
        body["errorMessage"] = job.error_message
    return body


def _describe_field(
    name: str, ftype: str, soap: str, label: str, custom: bool, nillable: bool, length: int
) -> dict[str, Any]:
    system = name in (
        "Id",
        "IsDeleted",
        "CreatedDate",
        "LastModifiedDate",
        "SystemModstamp",
        "Name",
    )
    picklist = []
    if name == "Membership_Status__c":
        picklist = [
            {"active": True, "defaultValue": False, "label": v, "validFor": None, "value": v}
            for v in MEMBERSHIP_VALUES
        ]
    entry = {
        "aggregatable": ftype not in ("boolean",),
        "aiPredictionField": False,
        "autoNumber": False,
        "byteLength": length * 3 if ftype in ("string", "email", "phone", "picklist") else length,
        "calculated": name == "Name",
        "calculatedFormula": None,
        "cascadeDelete": False,
        "caseSensitive": False,
        "compoundFieldName": COMPOUND_OF.get(name),
        "controllerName": None,
        "createable": not system,
        "custom": custom,
        "defaultValue": False if ftype == "boolean" else None,
        "defaultValueFormula": None,
        "defaultedOnCreate": system,
        "dependentPicklist": False,
        "deprecatedAndHidden": False,
        "digits": 0,
        "displayLocationInDecimal": False,
        "encrypted": False,
        "externalId": name == "App_User_Id__c",
        "extraTypeInfo": "personname" if name in ("FirstName", "LastName", "Name") else None,
        "filterable": ftype != "address",
        "filteredLookupInfo": None,
        "formulaTreatNullNumberAsZero": False,
        "groupable": ftype not in ("datetime", "address"),
        "highScaleNumber": False,
        "htmlFormatted": False,
        "idLookup": name in ("Id", "Email", "App_User_Id__c"),
        "inlineHelpText": None,
        "label": label,
        "length": length if ftype not in ("boolean", "date", "datetime") else 0,
        "mask": None,
        "maskType": None,
        "name": name,
        "nameField": name == "Name",
        "namePointing": False,
        "nillable": nillable,
        "permissionable": custom or name in ("Phone", "Email", "Birthdate", "AccountId"),
        "picklistValues": picklist,
        "polymorphicForeignKey": False,
        "precision": 18 if ftype in ("double", "currency") else 0,
        "queryByDistance": False,
        "referenceTargetField": None,
        "referenceTo": ["Account"] if name == "AccountId" else [],
        "relationshipName": "Account" if name == "AccountId" else None,
        "relationshipOrder": None,
        "restrictedDelete": False,
        "restrictedPicklist": False,
        "scale": 2 if ftype in ("double", "currency") else 0,
        "searchPrefilterable": False,
        "soapType": soap,
        "sortable": ftype != "address",
        "type": ftype,
        "unique": False,
        "updateable": not system,
        "writeRequiresMasterRead": False,
    }
    return entry


def contact_describe(version: str) -> dict[str, Any]:
    base = f"/services/data/v{version}/sobjects/Contact"
    return {
        "actionOverrides": [],
        "activateable": False,
        "childRelationships": [],
        "compactLayoutable": True,
        "createable": True,
        "custom": False,
        "customSetting": False,
        "deletable": True,
        "deprecatedAndHidden": False,
        "feedEnabled": True,
        "fields": [_describe_field(*spec) for spec in CONTACT_FIELDS],
        "hasSubtypes": False,
        "isSubtype": False,
        "keyPrefix": "003",
        "label": "Contact",
        "labelPlural": "Contacts",
        "layoutable": True,
        "mergeable": True,
        "mruEnabled": True,
        "name": "Contact",
        "namedLayoutInfos": [],
        "networkScopeFieldName": None,
        "queryable": True,
        "recordTypeInfos": [],
        "replicateable": True,
        "retrieveable": True,
        "searchable": True,
        "supportedScopes": [{"label": "All contacts", "name": "everything"}],
        "triggerable": True,
        "undeletable": True,
        "updateable": True,
        "urls": {
            "compactLayouts": f"{base}/describe/compactLayouts",
            "rowTemplate": f"{base}/{{ID}}",
            "describe": f"{base}/describe",
            "sobject": base,
        },
    }


def _xml_text(doc: minidom.Document, local_name: str) -> str | None:
    for node in doc.getElementsByTagName("*"):
        if node.localName == local_name:
            return "".join(c.data for c in node.childNodes if c.nodeType == c.TEXT_NODE)
    return None


_SOAP_SUCCESS = """<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope \
xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><loginResponse><result>\
<metadataServerUrl>{metadata_url}</metadataServerUrl><passwordExpired>false</passwordExpired>\
<sandbox>false</sandbox><serverUrl>{server_url}</serverUrl><sessionId>{session}</sessionId>\
<userId>{user_id}</userId><userInfo><accessibilityMode>false</accessibilityMode>\
<currencySymbol>$</currencySymbol><orgAttachmentFileSizeLimit>5242880</orgAttachmentFileSizeLimit>\
<orgDefaultCurrencyIsoCode>USD</orgDefaultCurrencyIsoCode><orgDisallowHtmlAttachments>false\
</orgDisallowHtmlAttachments><orgHasPersonAccounts>false</orgHasPersonAccounts>\
<organizationId>{org_id}</organizationId><organizationMultiCurrency>false\
</organizationMultiCurrency><organizationName>Acme</organizationName><profileId>00eHs000000AbCd\
</profileId><roleId xsi:nil="true"/><sessionSecondsValid>7200</sessionSecondsValid>\
<userDefaultCurrencyIsoCode xsi:nil="true"/><userEmail>{username}</userEmail>\
<userFullName>Integration User</userFullName><userId>{user_id}</userId>\
<userLanguage>en_US</userLanguage><userLocale>en_US</userLocale><userName>{username}</userName>\
<userTimeZone>America/Los_Angeles</userTimeZone><userType>Standard</userType>\
<userUiSkin>Theme3</userUiSkin></userInfo></result></loginResponse></soapenv:Body>\
</soapenv:Envelope>"""

_SOAP_FAULT = """<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope \
xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" \
xmlns:sf="urn:fault.partner.soap.sforce.com" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>\
<faultcode>INVALID_LOGIN</faultcode><faultstring>INVALID_LOGIN: Invalid username, password, \
security token; or user locked out.</faultstring><detail><sf:LoginFault \
xsi:type="sf:LoginFault"><sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode><sf:exceptionMessage>\
Invalid username, password, security token; or user locked out.</sf:exceptionMessage>\
</sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"""


class LocalSalesforceHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, org: SalesforceOrg) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.org = org


class SalesforceServer:
    """A running local org: `with SalesforceServer() as sf_server: ...`."""

    # By port, so a resource that knows only the port can read the org's clock.
    running: ClassVar[dict[int, SalesforceServer]] = {}

    def __init__(self, credentials: Credentials | None = None, api_limit: int = 100_000) -> None:
        self.org = SalesforceOrg(credentials, api_limit)
        self._http = LocalSalesforceHTTPServer(self.org)
        self.port: int = self._http.server_address[1]
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.02},
            daemon=True,
            name=f"local-salesforce-{self.port}",
        )

    def __enter__(self) -> SalesforceServer:
        self._thread.start()
        SalesforceServer.running[self.port] = self
        return self

    def __exit__(self, *exc: object) -> None:
        SalesforceServer.running.pop(self.port, None)
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(5)

    @property
    def instance_url(self) -> str:
        return f"https://{INSTANCE_HOST}"

    def session(self) -> requests.Session:
        return local_session(self.port)

    def session_id(self) -> str:
        """A valid session id for direct (instance URL + session id) logins."""
        return self.org.new_session("direct")


class LocalSalesforceAdapter(HTTPAdapter):
    """Sends every https:// request to the local server over plain HTTP, keeping the original
    host in X-Original-Host so the server can tell login.salesforce.com from a My Domain."""

    def __init__(self, port: int) -> None:
        super().__init__(pool_maxsize=4)
        self.port = port

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        parts = urlsplit(request.url)
        request.headers["X-Original-Host"] = parts.netloc
        request.url = urlunsplit(("http", f"127.0.0.1:{self.port}", parts.path, parts.query, ""))
        return super().send(request, **kwargs)


def local_session(port: int) -> requests.Session:
    session = requests.Session()
    # Loopback only: ignore proxy and CA-bundle environment variables.
    session.trust_env = False
    session.mount("https://", LocalSalesforceAdapter(port))
    return session


def generate_jwt_keypair() -> tuple[bytes, bytes]:
    """A throwaway RSA key pair (private PEM, public PEM) for JWT bearer tests."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def minutes_ago(minutes: float) -> datetime:
    """A SystemModstamp `minutes` in the past (on an org whose clock was not moved), for records
    committed late."""
    return now_ms() - timedelta(minutes=minutes)
