"""A request body → the events rudder-server would accept, with its defaults set.

Follows rudder-server's gateway (reference ``rudderstack.md`` §2.2-§2.4): the body must be
JSON; ``/v1/batch`` takes ``{"batch": [event, …]}``, the other endpoints take one event whose
``type`` is overwritten from the path; every event must be an object with a non-blank
``userId`` or ``anonymousId``. One bad event rejects the whole request. Accepted events get
``messageId`` (a new UUIDv4 unless a non-blank string), ``receivedAt`` (unless a string),
``request_ip`` (unless present), the processor's resolved ``timestamp`` (kept if it parses,
else ``receivedAt - (sentAt - originalTimestamp)`` with the server's arrival time, as the
processor uses the job's) and ``originalTimestamp`` / ``sentAt`` (receivedAt when absent, or
when the timestamp had to be computed and they do not parse). A missing or null ``type`` in
a batch becomes ``""`` so every stored event has one.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from personalization_pipeline.sync.identify import parse_json

__all__ = [
    "GO_WHITESPACE",
    "AcceptedEvent",
    "Rejection",
    "accept_events",
    "compact_json",
    "parse_timestamp",
    "rfc3339_millis",
]

# strings.TrimSpace (unicode.IsSpace); Python's str.strip() would also strip U+001C-U+001F.
GO_WHITESPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


@dataclass(frozen=True)
class Rejection(Exception):
    """rudder-server's answer to a request it refuses: status and plain-text message."""

    status: int
    message: str


INVALID_JSON = Rejection(400, "invalid json")
NOT_AN_EVENT = Rejection(400, "event is not a valid rudder event")
NO_IDENTITY = Rejection(400, "request neither has anonymousId nor userId")
EMPTY_BATCH = Rejection(400, "empty batch payload")


# A "-0" that may be the JSON number minus zero (dates and "SKU-0" match too: harmless).
_MINUS_ZERO = re.compile(rb"-0(?![.eE\d])")


def parse_body(body: bytes) -> Any:
    """The body as JSON; orjson first, the identify module's parser where orjson differs.

    orjson reads ``-0`` as integer 0 (JavaScript keeps negative zero, which the identify
    encoding renders ``-0``) and refuses numbers beyond a double and lone surrogate escapes,
    which rudder-server accepts as valid JSON.
    """
    if _MINUS_ZERO.search(body) is None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    try:
        return parse_json(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise INVALID_JSON from None


def _present(identity: Any) -> bool:
    if identity is None:
        return False
    if isinstance(identity, str):
        return bool(identity.strip(GO_WHITESPACE))
    # Go stringifies anything else (numbers, booleans, objects) to a non-empty text.
    return True


def parse_timestamp(value: Any) -> datetime | None:
    """An RFC 3339 timestamp with a zone, as Go's time.Parse accepts it; else None."""
    if not isinstance(value, str) or len(value) < 20 or value[10] not in "Tt":
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def rfc3339_millis(moment: datetime) -> str:
    """Go's misc.RFC3339Milli of a UTC time: ``2024-05-01T12:00:00.123Z``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _resolve_times(event: dict[str, Any], received: datetime, received_at: str) -> datetime:
    """Set the processor's time fields on ``event``; return its resolved timestamp."""
    timestamp = parse_timestamp(event.get("timestamp"))
    if timestamp is not None:
        # The usual case (SDKs send timestamp): the other two are only defaulted if absent.
        event.setdefault("originalTimestamp", received_at)
        event.setdefault("sentAt", received_at)
        return timestamp
    original = parse_timestamp(event.get("originalTimestamp"))
    if original is None:
        event["originalTimestamp"] = received_at
    sent = parse_timestamp(event.get("sentAt"))
    if sent is None:
        event["sentAt"] = received_at
    # Clock-skew correction: how long the event waited on the device before it was sent.
    waited = (sent - original) if sent is not None and original is not None else timedelta()
    timestamp = received - waited
    event["timestamp"] = rfc3339_millis(timestamp)
    return timestamp


def _apply_defaults(
    event: dict[str, Any], received: datetime, received_at: str, request_ip: str
) -> datetime:
    message_id = event.get("messageId")
    if isinstance(message_id, str) and message_id.strip(GO_WHITESPACE):
        if message_id != (trimmed := message_id.strip(GO_WHITESPACE)):
            event["messageId"] = trimmed
    else:
        event["messageId"] = str(uuid.uuid4())
    if not isinstance(event.get("receivedAt"), str):
        event["receivedAt"] = received_at
    if "request_ip" not in event:
        event["request_ip"] = request_ip
    if event.get("type") is None:
        event["type"] = ""
    return _resolve_times(event, received, received_at)


@dataclass(frozen=True)
class AcceptedEvent:
    event: dict[str, Any]
    timestamp: datetime
    """The resolved timestamp, for ordering purchases by when they happened."""


def accept_events(
    body: bytes, event_type: str | None, received: datetime, request_ip: str
) -> list[AcceptedEvent]:
    """The request's events with defaults set, or Rejection for the whole request.

    ``event_type`` is the path's type (``/v1/track`` → ``track``); None for ``/v1/batch``.
    ``received`` is when the request arrived, in UTC.
    """
    payload = parse_body(body)
    if event_type is None:
        batch = payload.get("batch") if isinstance(payload, dict) else None
        if not isinstance(batch, list) or not batch:
            raise EMPTY_BATCH
    else:
        if not isinstance(payload, dict):
            raise NOT_AN_EVENT
        payload["type"] = event_type
        batch = [payload]
    for event in batch:
        if not isinstance(event, dict):
            raise NOT_AN_EVENT
        if not (_present(event.get("userId")) or _present(event.get("anonymousId"))):
            raise NO_IDENTITY
    received_at = rfc3339_millis(received)
    return [
        AcceptedEvent(event, _apply_defaults(event, received, received_at, request_ip))
        for event in batch
    ]


def compact_json(value: Any) -> bytes:
    """Compact JSON of an accepted event (or anything built from one)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        # Integers beyond 64 bits or lone surrogates (only from parse_json's path): escaped
        # ASCII JSON keeps them readable by any JSON parser.
        return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode()
