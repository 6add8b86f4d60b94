"""What an accepted request does to Redis, in one round trip, before the gateway answers 200.

Two Lua scripts, each called with keys of one Redis Cluster slot:

- :data:`APPEND_SCRIPT` appends a request's events to one event stream (one call per shard
  the request touches), ``XADD MAXLEN ~``.
- :data:`PROFILE_SCRIPT` applies a user's identify and purchase events, in request order, to
  the profile hash and the purchase log (``keys.purchases_key``, same slot) atomically.
  On a single Redis one call carries every user of the request; on Redis Cluster one call
  per user.

Order and retries. The stream is the event log the warehouse is rebuilt from, so the appends
run first and the profile effects after: whatever a failure leaves behind, the log holds at
least what the profiles show. On a single Redis the whole request is one MULTI/EXEC (all or
nothing). Either way a request that fails answers 503, the SDK resends the same batch (same
``messageId``s), and the retry converges: identify writes are plain overwrites, purchases are
deduplicated by ``messageId``. The stream is at-least-once: an EXEC whose reply was lost is
appended again on the retry, and readers deduplicate by ``messageId``.

Purchases. The log holds the ``PURCHASE_LOG_SIZE`` newest purchases (by the event's resolved
timestamp, ties by ``messageId``) as JSON ``[[sortkey, messageId, sku, …], …]``, newest first,
and the hash shows the newest five SKUs as ``recent_five_purchases.purchase_1`` (newest) …
``purchase_5``; fields beyond the known SKUs are removed, so the five fields are a function of
the log alone. The log is the top N of every purchase ever delivered, which does not depend on
the order or repetition of deliveries, so duplicates and shuffles end in the same state as
one ordered delivery. A resent purchase older than all N kept ones cannot change the five
shown fields and is dropped as if seen; dedupe can only miss for an event whose timestamp
changes between deliveries (none sent, so receivedAt decides) and that has fallen out of the
N newest in between.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import NoScriptError

from personalization_pipeline.events.connection import AsyncRedis
from personalization_pipeline.events.intake import GO_WHITESPACE, AcceptedEvent, compact_json
from personalization_pipeline.events.streams import EventStreams
from personalization_pipeline.keys import (
    EVENT_FIELD,
    event_stream_key,
    purchases_key,
    stream_shard,
    user_key,
)
from personalization_pipeline.sync.identify import IdentifyError, encode_identify, js_string

__all__ = [
    "APPEND_SCRIPT",
    "PROFILE_SCRIPT",
    "PURCHASE_FIELD",
    "PURCHASE_LOG_SIZE",
    "EventEffects",
    "purchase_skus",
]

PURCHASE_LOG_SIZE = 50
PURCHASES_SHOWN = 5
PURCHASE_FIELD = "recent_five_purchases.purchase_"
# Sort keys count microseconds from 0001-01-01 so every timestamp gives 18 digits and
# comparing the strings compares the times.
_ORIGIN = datetime(1, 1, 1, tzinfo=UTC)
_MICROSECOND = datetime.resolution

# Each call carries its payload in one argument: redis-py packs arguments one by one in
# Python, which costs more than the scripts themselves once a request has hundreds.

# KEYS[1]: a stream. ARGV: max length, entry field, the events as JSON lines (orjson never
# writes a raw newline).
APPEND_SCRIPT = """
local events, from = ARGV[3], 1
while from <= #events do
  local stop = string.find(events, '\\n', from, true) or (#events + 1)
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', ARGV[2],
    string.sub(events, from, stop - 1))
  from = stop + 1
end
"""

# KEYS: profile, log, profile, log, … ARGV[1]: JSON [log size, shown, field prefix, ops, …]
# with one ops list per profile: 'I', n, field, value, … (identify) and 'P', sortkey,
# messageId, n, sku, … (purchase), in request order.
PROFILE_SCRIPT = """
local args = cjson.decode(ARGV[1])
local size, shown, field = args[1], args[2], args[3]

-- HSET in slices: unpack() of thousands of values overflows Lua's C stack.
local function hset_range(key, ops, first, last)
  for from = first, last, 1000 do
    redis.call('HSET', key, unpack(ops, from, math.min(from + 999, last)))
  end
end

local function newer(a, b)
  return a[1] > b[1] or (a[1] == b[1] and a[2] > b[2])
end

-- Keep the top `size` purchases by (time, messageId); false when the log did not change.
local function record(log, entry)
  for i = 1, #log do
    if log[i][2] == entry[2] then return false end
  end
  local place = #log + 1
  for i = 1, #log do
    if newer(entry, log[i]) then place = i; break end
  end
  if place > size then return false end
  table.insert(log, place, entry)
  if #log > size then table.remove(log) end
  return true
end

local function show(profile, log)
  local fields, n = {}, 0
  for i = 1, #log do
    for j = 3, #log[i] do
      if n == shown then break end
      n = n + 1
      fields[#fields + 1] = field .. n
      fields[#fields + 1] = log[i][j]
    end
  end
  redis.call('HSET', profile, unpack(fields))
  for k = n + 1, shown do redis.call('HDEL', profile, field .. k) end
end

for u = 1, #KEYS / 2 do
  local profile, logkey, ops = KEYS[2 * u - 1], KEYS[2 * u], args[3 + u]
  local at, log, changed = 1, nil, false
  while at <= #ops do
    if ops[at] == 'I' then
      local n = ops[at + 1]
      hset_range(profile, ops, at + 2, at + 1 + 2 * n)
      at = at + 2 + 2 * n
    else
      local n = ops[at + 3]
      local entry = {ops[at + 1], ops[at + 2]}
      for k = 1, n do entry[k + 2] = ops[at + 3 + k] end
      at = at + 4 + n
      if log == nil then
        local stored = redis.call('GET', logkey)
        log = stored and cjson.decode(stored) or {}
      end
      if record(log, entry) then
        changed = true
        show(profile, log)
      end
    end
  end
  if changed then redis.call('SET', logkey, cjson.encode(log)) end
end
"""


@dataclass(frozen=True)
class Script:
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


APPEND = Script(APPEND_SCRIPT)
PROFILE = Script(PROFILE_SCRIPT)

Call = tuple[Script, list[str], list[Any]]


def purchase_skus(properties: Any) -> list[str]:
    """SKUs from ``properties.products[].sku``, else ``properties.sku``; blanks skipped."""
    if not isinstance(properties, dict):
        return []
    products = properties.get("products")
    if isinstance(products, list):
        values = [p.get("sku") for p in products if isinstance(p, dict)]
    else:
        values = [properties.get("sku")]
    skus = []
    for value in values:
        if value is None or isinstance(value, dict | list):
            continue
        sku = value if isinstance(value, str) else js_string(value)
        if sku:
            skus.append(sku)
    return skus


def _sort_key(moment: datetime) -> str:
    return f"{(moment - _ORIGIN) // _MICROSECOND:018d}"


class EventEffects:
    """Turns accepted events into script calls and runs them in one round trip."""

    def __init__(
        self,
        client: AsyncRedis,
        *,
        streams: EventStreams,
        prefix: str = "",
        purchase_events: Iterable[str] = ("Order Completed",),
        cluster: bool = False,
    ) -> None:
        self.client = client
        self.streams = streams
        self.prefix = prefix
        self.purchase_events = frozenset(purchase_events)
        self.cluster = cluster
        self._stream_keys = [event_stream_key(s, prefix) for s in range(streams.shards)]
        self._append_head = [str(streams.max_length), EVENT_FIELD]
        self._profile_head = [PURCHASE_LOG_SIZE, PURCHASES_SHOWN, PURCHASE_FIELD]

    def plan(self, accepted: Sequence[AcceptedEvent]) -> list[Call]:
        """The script calls for a request: stream appends first, then profile effects."""
        shards = self.streams.shards
        appends: dict[int, list[bytes]] = {}
        profiles: dict[str, list[Any]] = {}
        for item in accepted:
            event = item.event
            shard = stream_shard(_identity(event), shards) if shards > 1 else 0
            appends.setdefault(shard, []).append(compact_json(event))
            effect = self._profile_ops(event, item.timestamp)
            if effect is not None:
                key, ops = effect
                profiles.setdefault(key, []).extend(ops)
        calls: list[Call] = [
            (APPEND, [self._stream_keys[shard]], [*self._append_head, b"\n".join(lines)])
            for shard, lines in appends.items()
        ]
        # Redis Cluster runs a script only on keys of one slot: one call per profile there.
        groups = [[key] for key in profiles] if self.cluster else [list(profiles)]
        for group in filter(None, groups):
            keys = [name for key in group for name in (key, purchases_key(key))]
            payload = compact_json([*self._profile_head, *(profiles[key] for key in group)])
            calls.append((PROFILE, keys, [payload]))
        return calls

    def _profile_ops(self, event: dict[str, Any], timestamp: datetime) -> tuple[str, list] | None:
        kind = event.get("type")
        if not isinstance(kind, str):
            return None
        kind = kind.lower()
        try:
            if kind == "identify":
                # Rejected by RudderStack's Redis destination (blank userId, no traits): the
                # event is still accepted and streamed, only the hash is not written.
                key, fields = encode_identify(event, self.prefix)
                ops: list[Any] = ["I", len(fields)]
                for name, value in fields.items():
                    ops += (name, value)
                return key, ops
            if kind == "track" and event.get("event") in self.purchase_events:
                skus = purchase_skus(event.get("properties"))
                if not skus:
                    return None
                # Anonymous purchases have no profile hash (IdentifyError): streamed only.
                key = user_key(event.get("userId"), self.prefix)
                return key, ["P", _sort_key(timestamp), event["messageId"], len(skus), *skus]
        except IdentifyError:
            return None
        return None

    async def apply(self, calls: list[Call]) -> None:
        """Run the calls in order; raises redis errors (the caller answers 503)."""
        if not calls:
            return
        results = await self._run(calls, by_sha=True)
        # A Redis that restarted or failed over has lost its script cache: EVAL the calls
        # that did not run (it caches the script again). Everything else did run.
        missing = [
            call
            for call, result in zip(calls, results, strict=True)
            if isinstance(result, NoScriptError)
        ]
        if missing:
            results = await self._run(missing, by_sha=False)
        for result in results:
            if isinstance(result, Exception):
                raise result

    async def _run(self, calls: list[Call], *, by_sha: bool) -> list[Any]:
        async with self.client.pipeline(transaction=not self.cluster) as pipe:
            for script, keys, args in calls:
                command = ("EVALSHA", script.sha) if by_sha else ("EVAL", script.source)
                pipe.execute_command(*command, len(keys), *keys, *args)
            return await pipe.execute(raise_on_error=False)


def _identity(event: dict[str, Any]) -> str:
    """What picks the stream: userId unless blank, else anonymousId (as intake checks them)."""
    user_id = event.get("userId")
    if isinstance(user_id, str):
        if user_id.strip(GO_WHITESPACE):
            return user_id
    elif user_id is not None:
        return js_string(user_id)
    anonymous_id = event.get("anonymousId")
    return anonymous_id if isinstance(anonymous_id, str) else js_string(anonymous_id)
