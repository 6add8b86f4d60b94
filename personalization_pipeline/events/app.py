"""The HTTP layer: rudder-server's data-plane API on Starlette.

``POST /v1/{identify,track,page,screen,group,alias,batch}`` with Basic auth (the write key is
the user name), optional gzip bodies, and rudder-server's answers: ``200 ok``, or its
plain-text error with a trailing newline (reference ``rudderstack.md`` §2.4). A request is
answered 200 only after every effect is in Redis; if Redis cannot be reached it is answered
503, which the SDKs retry. ``GET /health`` says whether this process and Redis are up.

Stateless: every worker and every instance behind a load balancer shares only Redis.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import orjson
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from personalization_pipeline.events.config import GatewaySettings
from personalization_pipeline.events.connection import async_client
from personalization_pipeline.events.effects import EventEffects
from personalization_pipeline.events.intake import Rejection, accept_events
from personalization_pipeline.serving.personalize import personalize_async
from personalization_pipeline.settings import current
from personalization_pipeline.sync.identify import IdentifyError

__all__ = ["EVENT_TYPES", "create_app"]

log = logging.getLogger(__name__)

EVENT_TYPES = ("identify", "track", "page", "screen", "group", "alias")
TEXT = "text/plain; charset=utf-8"
# rudder-server measures a single event after wrapping it as {"batch":[event]}.
WRAP_OVERHEAD = len(b'{"batch":[]}')
MAX_LIMIT = 100

NO_WRITE_KEY = Rejection(401, "failed to read writekey from header")
UNKNOWN_WRITE_KEY = Rejection(401, "invalid write key")
TOO_LARGE = Rejection(413, "request size exceeds max limit")
UNREADABLE = Rejection(500, "failed to read body from request")
UNAVAILABLE = Rejection(503, "event store unavailable, retry later")
NOT_STORED = Rejection(500, "failed to store events")
NO_READ_KEY = Rejection(401, "failed to read read key from header")
UNKNOWN_READ_KEY = Rejection(401, "invalid read key")
BAD_LIMIT = Rejection(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
BLANK_USER = Rejection(400, "userId is blank")
UNREADABLE_PROFILES = Rejection(503, "profile store unavailable, retry later")


def _error(rejection: Rejection) -> Response:
    # Go's http.Error: the message plus "\n", text/plain, nosniff.
    return Response(
        rejection.message + "\n",
        rejection.status,
        headers={"X-Content-Type-Options": "nosniff"},
        media_type=TEXT,
    )


def _basic_user(authorization: str | None, missing: Rejection) -> bytes:
    """The user name of a Basic auth header, as Go's Request.BasicAuth reads it."""
    if not authorization or authorization[:6].lower() != "basic ":
        raise missing
    try:
        decoded = base64.b64decode(authorization[6:], validate=True)
    except (binascii.Error, ValueError):
        raise missing from None
    user, colon, _ = decoded.partition(b":")
    if not colon or not user:
        raise missing
    return user


def _authenticate(request: Request, keys: list[bytes], missing: Rejection, unknown: Rejection):
    user = _basic_user(request.headers.get("authorization"), missing)
    known = False
    for key in keys:  # every key compared, in constant time: no timing hint of a near miss
        known |= hmac.compare_digest(user, key)
    if not known:
        raise unknown


def _gunzip(raw: bytes, limit: int) -> bytes:
    """Decompress every gzip member of ``raw``; TOO_LARGE beyond ``limit`` bytes."""
    out = bytearray()
    try:
        while raw:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out += inflater.decompress(raw, limit + 1 - len(out))
            if len(out) > limit:
                raise TOO_LARGE
            if not inflater.eof:
                raise UNREADABLE
            raw = inflater.unused_data
    except zlib.error:
        raise UNREADABLE from None
    return bytes(out)


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._keys = [key.encode() for key in settings.write_keys]
        self._read_keys = [key.encode() for key in settings.read_keys]
        self.effects: EventEffects | None = None

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        settings = self.settings
        client = async_client(settings.destination, settings.socket_timeout)
        self.effects = EventEffects(
            client,
            streams=settings.streams,
            prefix=settings.destination.prefix,
            purchase_events=settings.purchase_events,
            cluster=settings.destination.cluster_mode,
        )
        try:
            yield
        finally:
            await client.aclose()

    async def _body(self, request: Request, limit: int) -> bytes:
        gzipped = request.headers.get("content-encoding") == "gzip"
        # A gzip body is read up to a little more than the limit; gzip cannot grow real
        # payloads by more than that, and a body past it would be refused anyway.
        raw_limit = limit + (limit >> 8) + 1024 if gzipped else limit
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > raw_limit:
                raise TOO_LARGE
            chunks.append(chunk)
        raw = b"".join(chunks)
        return _gunzip(raw, limit) if gzipped else raw

    def endpoint(self, event_type: str | None) -> Callable[[Request], Awaitable[Response]]:
        limit = self.settings.max_body_bytes - (0 if event_type is None else WRAP_OVERHEAD)

        async def handle(request: Request) -> Response:
            try:
                _authenticate(request, self._keys, NO_WRITE_KEY, UNKNOWN_WRITE_KEY)
                body = await self._body(request, limit)
                accepted = accept_events(body, event_type, datetime.now(UTC), _client_ip(request))
                await self._store(accepted)
            except Rejection as rejection:
                return _error(rejection)
            return Response(b"ok", media_type=TEXT)

        return handle

    async def _store(self, accepted: list) -> None:
        assert self.effects is not None, "the app's lifespan did not run"
        where = self.settings.destination.display_url()
        try:
            await self.effects.apply(self.effects.plan(accepted))
        except (redis.ConnectionError, redis.TimeoutError) as error:
            log.warning("Redis at %s is unreachable (%s): answering 503", where, error)
            raise UNAVAILABLE from error
        except redis.RedisError as error:
            log.error("Redis at %s refused the events (%s): answering 500", where, error)
            raise NOT_STORED from error

    async def personalize(self, request: Request) -> Response:
        assert self.effects is not None, "the app's lifespan did not run"
        try:
            _authenticate(request, self._read_keys, NO_READ_KEY, UNKNOWN_READ_KEY)
            limit = _limit(request.query_params.get("limit", "10"))
            result = await personalize_async(
                self.effects.client,
                request.path_params["user_id"],
                limit,
                self.settings.destination.prefix,
                request.query_params.get("category"),
            )
        except Rejection as rejection:
            return _error(rejection)
        except IdentifyError:
            return _error(BLANK_USER)
        except redis.RedisError as error:
            where = self.settings.destination.display_url()
            log.warning("Redis at %s could not be read (%s): answering 503", where, error)
            return _error(UNREADABLE_PROFILES)
        return Response(result.to_json(), media_type="application/json")

    async def health(self, _request: Request) -> Response:
        assert self.effects is not None, "the app's lifespan did not run"
        try:
            await self.effects.client.ping()
            state, status = "UP", 200
        except redis.RedisError:
            state, status = "DOWN", 503
        body = orjson.dumps({"server": "UP", "redis": state})
        return Response(body, status, media_type="application/json")


def _limit(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
        raise BAD_LIMIT
    return int(text)


def _client_ip(request: Request) -> str:
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded:
        return forwarded.split(",", 1)[0].strip()
    return request.client.host if request.client else ""


def create_app(settings: GatewaySettings | None = None) -> Starlette:
    """The ASGI app; settings from the environment unless given."""
    gateway = Gateway(settings or GatewaySettings.from_settings(current()))
    routes = [
        Route(f"/v1/{event_type}", gateway.endpoint(event_type), methods=["POST"])
        for event_type in EVENT_TYPES
    ]
    routes.append(Route("/v1/batch", gateway.endpoint(None), methods=["POST"]))
    routes.append(Route("/v1/personalize/{user_id}", gateway.personalize, methods=["GET"]))
    routes.append(Route("/health", gateway.health, methods=["GET"]))
    return Starlette(routes=routes, lifespan=gateway.lifespan)
