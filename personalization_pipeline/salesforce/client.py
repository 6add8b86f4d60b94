"""A Salesforce connection that survives what a production org throws at a long extract.

Plain Python, no Dagster: authentication from a config object, retries with bounded exponential
backoff on transient failures, one re-login per call on an expired session, fail-fast query
errors carrying Salesforce's own message, and an API-usage ledger for budget stops.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
)

from personalization_pipeline.errors import PermanentError

T = TypeVar("T")

SESSION_LOGIN_WARNING = (
    "Logging in with SALESFORCE_INSTANCE_URL + SALESFORCE_SESSION_ID: this is for trying "
    "things, not for unattended sensors and schedules. A session id cannot be renewed, so every "
    "run fails once it expires (after the org's session timeout, 2 hours by default); configure "
    "a login flow (username + password, OAuth, JWT) for unattended runs"
)


@dataclass(frozen=True)
class SalesforceAuth:
    """How to log in. Which flow is used follows from which settings are present (see `flow`).

    Secrets live here only for the duration of a run; `__repr__` hides them.
    """

    username: str | None = None
    password: str | None = None
    security_token: str | None = None
    domain: str = "login"
    consumer_key: str | None = None
    consumer_secret: str | None = None
    private_key_file: str | None = None
    instance_url: str | None = None
    session_id: str | None = None
    api_version: str = "59.0"

    def __repr__(self) -> str:
        # Never raises, so incomplete credentials can still be logged and shown in tracebacks.
        try:
            flow, who = self.flow, self.who
        except SalesforceConfigError:
            flow, who = "incomplete", self.username
        return f"SalesforceAuth(flow={flow!r}, who={who!r}, domain={self.domain!r})"

    @property
    def flow(self) -> str:
        if self.instance_url and self.session_id:
            return "session"
        if self.consumer_key and self.private_key_file and self.username:
            return "jwt_bearer"
        if self.consumer_key and self.consumer_secret and self.username and self.password:
            return "oauth_password"
        if self.consumer_key and self.consumer_secret:
            return "client_credentials"
        if self.username and self.password:
            return "password"
        raise SalesforceConfigError(
            "Salesforce credentials are incomplete. Set one of: SALESFORCE_USERNAME + "
            "SALESFORCE_PASSWORD + SALESFORCE_SECURITY_TOKEN (password login); "
            "SALESFORCE_CONSUMER_KEY + SALESFORCE_CONSUMER_SECRET + SALESFORCE_DOMAIN (client "
            "credentials, My Domain such as acme.my); SALESFORCE_USERNAME + "
            "SALESFORCE_CONSUMER_KEY + SALESFORCE_PRIVATE_KEY_FILE (JWT bearer); "
            "SALESFORCE_INSTANCE_URL + SALESFORCE_SESSION_ID (existing session)"
        )

    @property
    def who(self) -> str:
        """Who the run acts as, safe to log."""
        if self.flow == "session":
            # The host alone: a URL can carry a user and password.
            return urlsplit(str(self.instance_url)).hostname or "the instance URL"
        if self.flow == "client_credentials":
            return f"connected app on {self.domain}.salesforce.com"
        return f"{self.username} via {self.domain}.salesforce.com"


class SalesforceConfigError(PermanentError, ValueError):
    """The configuration cannot work; the message names the setting to fix."""


class SalesforceQueryError(PermanentError, RuntimeError):
    """Salesforce rejected a query (MALFORMED_QUERY, INVALID_FIELD, ...): retrying cannot help."""

    def __init__(self, code: str, message: str, soql: str) -> None:
        text = f"Salesforce rejected the query with {code}: {message.strip()}"
        if soql and soql not in message:
            text += f"\nQuery: {soql}"
        super().__init__(text)
        self.code = code


class ApiLimitReached(RuntimeError):
    """Salesforce kept answering REQUEST_LIMIT_EXCEEDED after every retry."""


def connect(auth: SalesforceAuth, session: requests.Session | None = None) -> Salesforce:
    """Log in with the flow `auth` describes.

    `session` is a test seam only: tests pass a requests.Session whose transport adapter
    reaches the local Salesforce server. Production leaves it None.
    """
    common: dict[str, Any] = {"version": auth.api_version, "session": session}
    flow = auth.flow
    if flow == "session":
        return Salesforce(instance_url=auth.instance_url, session_id=auth.session_id, **common)
    if flow == "jwt_bearer":
        return Salesforce(
            username=auth.username,
            consumer_key=auth.consumer_key,
            privatekey_file=auth.private_key_file,
            domain=auth.domain,
            **common,
        )
    if flow == "oauth_password":
        return Salesforce(
            username=auth.username,
            # The OAuth password grant takes the security token appended to the password.
            password=(auth.password or "") + (auth.security_token or ""),
            consumer_key=auth.consumer_key,
            consumer_secret=auth.consumer_secret,
            domain=auth.domain,
            **common,
        )
    if flow == "client_credentials":
        if auth.domain in ("login", "test"):
            raise SalesforceConfigError(
                "The client-credentials flow needs your My Domain: set SALESFORCE_DOMAIN to e.g. "
                "acme.my (not login or test)"
            )
        return Salesforce(
            consumer_key=auth.consumer_key,
            consumer_secret=auth.consumer_secret,
            domain=auth.domain,
            **common,
        )
    return Salesforce(
        username=auth.username,
        password=auth.password,
        security_token=auth.security_token or "",
        domain=auth.domain,
        **common,
    )


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff: base * 2**(attempt-1), capped, with +-25% jitter."""

    max_attempts: int = 5
    base_seconds: float = 1.0
    max_seconds: float = 60.0

    def delay(self, attempt: int) -> float:
        return min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1)) * random.uniform(
            0.75, 1.25
        )


@dataclass
class ApiUsage:
    """What this run spent, and what Salesforce last reported for the whole org."""

    calls: int = 0
    reported_used: int | None = None
    reported_limit: int | None = None
    calls_since_report: int = 0

    @property
    def estimated_used(self) -> int | None:
        if self.reported_used is None:
            return None
        return self.reported_used + self.calls_since_report

    def share(self) -> float | None:
        used = self.estimated_used
        if used is None or not self.reported_limit:
            return None
        return used / self.reported_limit

    def reported(self) -> str:
        if self.reported_used is None:
            return "not reported"
        return f"{self.estimated_used}/{self.reported_limit}"


def _error_code(error: SalesforceError) -> tuple[str, str]:
    content = error.content
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return str(content[0].get("errorCode", "")), str(content[0].get("message", ""))
    return "", str(content)


class BulkJobFailed(RuntimeError):
    """A Bulk 2.0 job failed on every attempt, or never finished."""


# A small job is done within a second; polls then back off towards SALESFORCE_BULK_POLL_SECONDS.
BULK_FIRST_POLL_SECONDS = 0.25


class SalesforceClient:
    """simple-salesforce plus the failure handling an unattended extract needs."""

    # As simple-salesforce's own wait: a job still running after a day is not going to finish.
    bulk_job_timeout_seconds: float = 24 * 3600

    def __init__(
        self,
        auth: SalesforceAuth,
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] = lambda message: None,
        warn: Callable[[str], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.auth = auth
        self.clock = clock  # where "now" ends a getDeleted window; tests use the org's clock
        self.retry = retry or RetryPolicy()
        self._session = session
        self._sleep = sleep
        self._log = log
        self._warn = warn or log
        self.usage = ApiUsage()
        # Whether Salesforce has answered a call yet: a session id refused on the first call
        # was never valid here, one refused later expired during the run.
        self._answered = False
        if auth.flow == "session":
            self._warn(SESSION_LOGIN_WARNING)
        self.sf = self._login()

    def _login(self) -> Salesforce:
        return self._with_retries(lambda: connect(self.auth, self._session), "login", count=False)

    def call(self, what: str, operation: Callable[[Salesforce], T], soql: str = "") -> T:
        """Run `operation(sf)` with retries; re-login once if the session has expired."""
        relogged = False
        while True:
            try:
                return self._with_retries(lambda: operation(self.sf), what, soql=soql)
            except SalesforceExpiredSession:
                if self.auth.flow == "session":
                    raise SalesforceConfigError(self._session_refused(what)) from None
                if relogged:
                    raise
                relogged = True
                self._log(f"Salesforce session expired during {what}; logging in again")
                self.sf = self._login()

    def _session_refused(self, what: str) -> str:
        host = self.auth.who
        if self._answered:
            return (
                f"SALESFORCE_SESSION_ID expired during this run ({what} on {host} was refused "
                "after earlier calls worked), and a session id cannot be renewed: set a fresh "
                "one, or configure a login flow (username + password, OAuth, JWT) for unattended "
                "runs"
            )
        return (
            f"{host} refused SALESFORCE_SESSION_ID on the first call ({what}): the session id "
            "is mistyped, expired before this run, or belongs to another org or instance. Copy a "
            "fresh one for SALESFORCE_INSTANCE_URL's org, or configure a login flow"
        )

    def _with_retries(
        self, operation: Callable[[], T], what: str, soql: str = "", count: bool = True
    ) -> T:
        attempt = 0
        while True:
            attempt += 1
            if count:
                self.usage.calls += 1
                self.usage.calls_since_report += 1
            try:
                result = operation()
            except SalesforceMalformedRequest as error:
                code, message = _error_code(error)
                raise SalesforceQueryError(code or "MALFORMED_REQUEST", message, soql) from None
            except SalesforceExpiredSession:
                raise
            except SalesforceRefusedRequest as error:
                code, message = _error_code(error)
                if code != "REQUEST_LIMIT_EXCEEDED":
                    raise
                if attempt >= self.retry.max_attempts:
                    raise ApiLimitReached(f"{what}: {message}") from error
                reason = code
            except SalesforceGeneralError as error:
                if error.status < 500 or attempt >= self.retry.max_attempts:
                    raise
                reason = f"HTTP {error.status} {_error_code(error)[0]}".strip()
            except (requests.ConnectionError, requests.Timeout) as error:
                if attempt >= self.retry.max_attempts:
                    raise
                reason = type(error).__name__
            else:
                if count:
                    self._answered = True
                    self._note_usage()
                return result
            delay = self.retry.delay(attempt)
            self._log(
                f"Salesforce {what} failed ({reason}); attempt {attempt}/"
                f"{self.retry.max_attempts}, retrying in {delay:.2f}s"
            )
            self._sleep(delay)

    def _note_usage(self, holder: Any = None) -> None:
        reported = getattr(holder or self.sf, "api_usage", {}).get("api-usage")
        if reported is not None and (
            self.usage.reported_used is None or reported.used != self.usage.reported_used
        ):
            self.usage.reported_used, self.usage.reported_limit = reported.used, reported.total
            self.usage.calls_since_report = 0

    # -- the calls the extractor makes --
    def describe_contact(self) -> dict[str, Any]:
        return self._contact_call("Contact describe", lambda contact: contact.describe())

    def deleted_contacts(self, start: datetime, end: datetime) -> dict[str, Any]:
        """getDeleted: {"deletedRecords": [{"id", "deletedDate"}], "earliestDateAvailable",
        "latestDateCovered"}. `start` and `end` must be timezone-aware."""
        return self._contact_call("Contact getDeleted", lambda contact: contact.deleted(start, end))

    def _contact_call(self, what: str, operation: Callable[[Any], T]) -> T:
        def on_contact(sf: Salesforce) -> T:
            contact = sf.Contact
            result = operation(contact)
            # SFType keeps the usage it saw on itself, not on the client.
            self._note_usage(contact)
            return result

        return self.call(what, on_contact)

    def query_page(self, soql: str, batch_size: int) -> dict[str, Any]:
        headers = {"Sforce-Query-Options": f"batchSize={batch_size}"}
        return self.call(
            "query",
            lambda sf: sf.query(soql, include_deleted=True, headers=headers),
            soql=soql,
        )

    def query_more(self, next_records_url: str, batch_size: int) -> dict[str, Any]:
        headers = {"Sforce-Query-Options": f"batchSize={batch_size}"}
        return self.call(
            "query page",
            lambda sf: sf.query_more(next_records_url, identifier_is_url=True, headers=headers),
        )

    # Bulk 2.0 goes through simple-salesforce's job client (`sf.bulk2.Contact._client`, stable
    # in the pinned 1.12.10) because its query generators cannot resume a page after a
    # transient failure; with the locator in hand each page is retried on its own.
    def bulk_query_all(self, soql: str, max_poll_seconds: float) -> str:
        """Run a queryAll job to completion and return its id.

        A job that ends Failed or Aborted is created again, up to the retry policy's attempts and
        with its backoff, so a failed job costs seconds rather than a step retry.
        """
        attempt = 0
        while True:
            attempt += 1
            job_id = self._bulk_create_query_all(soql)
            state, message = self._bulk_wait(job_id, max_poll_seconds)
            if state == "JobComplete":
                return job_id
            if attempt >= self.retry.max_attempts:
                raise BulkJobFailed(
                    f"Bulk 2.0 job {job_id} ended {state} ({message}); {attempt} job(s) in a row "
                    f"failed, giving up (SALESFORCE_MAX_ATTEMPTS={self.retry.max_attempts})"
                )
            delay = self.retry.delay(attempt)
            self._log(
                f"Bulk 2.0 job {job_id} ended {state} ({message}); attempt {attempt}/"
                f"{self.retry.max_attempts}, creating it again in {delay:.2f}s"
            )
            self._sleep(delay)

    def _bulk_create_query_all(self, soql: str) -> str:
        from simple_salesforce.bulk2 import Operation

        job = self.call(
            "Bulk 2.0 job creation",
            lambda sf: sf.bulk2.Contact._client.create_job(Operation.query_all, soql),
            soql=soql,
        )
        return str(job["id"])

    def _bulk_wait(self, job_id: str, max_poll_seconds: float) -> tuple[str, str]:
        """Poll until the job ends: first after BULK_FIRST_POLL_SECONDS, then twice as long each
        time up to `max_poll_seconds`, so a small job is read within a second and a long one
        costs few calls. Returns the final state and Salesforce's error message."""
        deadline = time.monotonic() + self.bulk_job_timeout_seconds
        wait = min(BULK_FIRST_POLL_SECONDS, max_poll_seconds)
        while True:
            self._sleep(wait)
            job = self.call(
                "Bulk 2.0 job polling",
                lambda sf: sf.bulk2.Contact._client.get_job(job_id, True),
            )
            if job["state"] in ("JobComplete", "Failed", "Aborted"):
                return job["state"], str(job.get("errorMessage") or "no error message")
            if time.monotonic() > deadline:
                raise BulkJobFailed(
                    f"Bulk 2.0 job {job_id} is still {job['state']} after "
                    f"{self.bulk_job_timeout_seconds:g}s; it is left to Salesforce"
                )
            wait = min(wait * 2, max_poll_seconds)

    def bulk_results(self, job_id: str, locator: str, page_size: int) -> tuple[str, str]:
        """One CSV page and the locator of the next ('' after the last page)."""
        page = self.call(
            "Bulk 2.0 results",
            lambda sf: sf.bulk2.Contact._client.get_query_results(job_id, locator, page_size),
        )
        return page["records"], page["locator"]
