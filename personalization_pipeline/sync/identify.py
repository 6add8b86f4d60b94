"""The one identify → Redis-hash encoding, byte-identical to RudderStack's Redis destination.

RudderStack's transformer (JavaScript) decides the key, the field names and the value
strings; this module reproduces its rules (see ``reference/rudderstack.md`` §1):

- key ``[trim(prefix) + ":"] + "user:" + toString(userId)``; a blank userId is an error;
- fields = flatten(``context.traits``) overlaid by flatten(top-level ``traits``), nested
  objects joined with ``.``, arrays kept whole as compact ``JSON.stringify``;
- ``null`` and ``{}`` leaves are dropped; nothing left is an error;
- a ``__proto__`` key anywhere in the traits (arrays included) is an error, as RudderStack's
  prototype-pollution guard refuses it;
- every scalar is rendered by ``lodash.toString`` (JS ``Number::toString`` for numbers).

The warehouse sync and the real-time ingestion both call this module; nothing else in the
project may format a value that ends up in a ``user:`` hash.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

__all__ = [
    "FORBIDDEN_PROTOTYPE",
    "PROTOTYPE_KEY",
    "USER_KEY_TEMPLATE",
    "IdentifyError",
    "encode_identify",
    "forbidden_trait_name",
    "identify_fields",
    "is_blank",
    "js_json",
    "js_keys",
    "js_number",
    "js_string",
    "key_prefix",
    "parse_json",
    "render_field",
    "template_key",
    "user_key",
]

_MAX_SAFE = 2**53
_MAX_ARRAY_INDEX = 2**32 - 2
# String.prototype.trim: WhiteSpace (incl. BOM and Unicode Zs) and LineTerminator. Python's
# str.strip() differs: it also strips U+001C-U+001F and U+0085 but keeps U+FEFF.
JS_WHITESPACE = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)


class IdentifyError(ValueError):
    """An event RudderStack's Redis destination rejects (400-class; nothing is written)."""


FORBIDDEN_PROTOTYPE = "Object contains forbidden prototype property"
PROTOTYPE_KEY = "__proto__"


def _holds_proto_key(value: Any) -> bool:
    """Whether a ``__proto__`` key appears at any depth, inside arrays too."""
    pending = [value]
    while pending:
        node = pending.pop()
        if isinstance(node, Mapping):
            if PROTOTYPE_KEY in node:
                return True
            pending.extend(node.values())
        elif isinstance(node, list | tuple):
            pending.extend(node)
    return False


def forbidden_trait_name(name: str) -> bool:
    """Whether a flattened trait name (``a.b.c``) stands for a ``__proto__`` key."""
    return PROTOTYPE_KEY in name.split(".")


def _parse_int(text: str) -> int | float:
    # JS numbers are doubles: "-0" keeps its sign (lodash renders it "-0").
    return -0.0 if text == "-0" else int(text)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text: str | bytes, *, allow_non_finite: bool = False) -> Any:
    """Parse a JSON body as JavaScript does for this encoding: ``-0`` stays negative zero,
    ``NaN``/``Infinity`` are rejected unless ``allow_non_finite`` (DuckDB's ``to_json``
    writes them). Use it before calling :func:`encode_identify`."""
    if allow_non_finite:
        return json.loads(text, parse_int=_parse_int)
    return json.loads(text, parse_int=_parse_int, parse_constant=_reject_constant)


def js_number(value: float | int | Decimal, *, negative_zero: bool = True) -> str:
    """ECMAScript ``Number::toString`` of ``value`` seen as a double.

    ``negative_zero`` keeps lodash's ``"-0"``; ``JSON.stringify`` passes False to get ``"0"``.
    """
    if type(value) is int and -_MAX_SAFE <= value <= _MAX_SAFE:
        # Exact doubles up to 2**53 print as their integer digits (n <= 16 < 21).
        return str(value)
    try:
        x = float(value)
    except OverflowError:
        x = math.inf if value > 0 else -math.inf
    if x != x:
        return "NaN"
    if x == 0:
        return "-0" if negative_zero and math.copysign(1.0, x) < 0 else "0"
    sign = ""
    if x < 0:
        sign, x = "-", -x
    if x == math.inf:
        return sign + "Infinity"
    # repr() gives the shortest round-trip digits, the same digits JS chooses.
    mantissa, _, exponent = repr(x).partition("e")
    whole, _, fraction = mantissa.partition(".")
    if fraction == "0":
        fraction = ""
    digits = (whole + fraction).lstrip("0")
    exp = (int(exponent) if exponent else 0) - len(fraction)
    stripped = digits.rstrip("0")
    exp += len(digits) - len(stripped)
    digits = stripped
    k = len(digits)
    n = k + exp
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * -n + digits
    else:
        e = n - 1
        body = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-")
        body += str(abs(e))
    return sign + body


def js_string(value: Any) -> str:
    """``lodash.toString(value)``: how RudderStack renders a hash value or a userId."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float | Decimal):
        return js_number(value)
    if isinstance(value, list | tuple):
        # lodash maps baseToString over the array, then Array#join(",").
        return ",".join("null" if item is None else js_string(item) for item in value)
    if isinstance(value, Mapping):
        return "[object Object]"
    raise TypeError(
        f"cannot render {type(value).__name__} as RudderStack would: "
        "cast it to VARCHAR or a number in the source query"
    )


def _is_array_index(key: str) -> bool:
    return (
        key.isdigit()
        and key.isascii()
        and (key == "0" or key[0] != "0")
        and (int(key) <= _MAX_ARRAY_INDEX)
    )


def js_keys(obj: Mapping[str, Any]) -> list[str]:
    """The keys of ``obj`` in JavaScript order: array indices ascending, then insertion order."""
    keys = [key if isinstance(key, str) else js_string(key) for key in obj]
    indices = [key for key in keys if _is_array_index(key)]
    if not indices:
        return keys
    indices.sort(key=int)
    return indices + [key for key in keys if not _is_array_index(key)]


def _js_items(obj: Mapping[Any, Any]) -> list[tuple[str, Any]]:
    items = {(key if isinstance(key, str) else js_string(key)): value for key, value in obj.items()}
    return [(key, items[key]) for key in js_keys(items)]


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\\ud800-\udfff]')
_SURROGATE_PAIR = re.compile(r"[\ud800-\udbff][\udc00-\udfff]")


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    return _ESCAPES.get(char) or f"\\u{ord(char):04x}"


def _js_quote(text: str) -> str:
    if _SURROGATE_PAIR.search(text):
        # JS sees a high+low pair as one character and writes it raw.
        text = _SURROGATE_PAIR.sub(
            lambda m: m.group().encode("utf-16-le", "surrogatepass").decode("utf-16-le"), text
        )
    return '"' + _NEEDS_ESCAPE.sub(_escape_char, text) + '"'


def js_json(value: Any) -> str:
    """JavaScript ``JSON.stringify(value)``: compact, JS key order and number format."""
    if isinstance(value, str):
        return _js_quote(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float | Decimal):
        text = js_number(value, negative_zero=False)
        return "null" if text in ("NaN", "Infinity", "-Infinity") else text
    if isinstance(value, Mapping):
        return "{" + ",".join(_js_quote(k) + ":" + js_json(v) for k, v in _js_items(value)) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(js_json(item) for item in value) + "]"
    raise TypeError(f"cannot JSON.stringify {type(value).__name__}")


def is_blank(value: Any) -> bool:
    """lodash ``isEmpty(toString(value).trim())``; JS trim also strips Unicode spaces."""
    return not js_string(value).strip(JS_WHITESPACE)


def key_prefix(prefix: str | None) -> str:
    """The part of every key before ``user:``: ``""`` or ``trim(prefix) + ":"``."""
    trimmed = (prefix or "").strip(JS_WHITESPACE)
    return trimmed + ":" if trimmed else ""


# RudderStack's profile hash key; a SyncSpec's key_template defaults to it.
USER_KEY_TEMPLATE = "user:{key}"


def template_key(template: str, value: Any, prefix: str = "") -> str:
    """``[prefix:]`` + ``template`` with ``{key}`` replaced by ``value`` as RudderStack renders
    a userId; raises IdentifyError when blank."""
    if is_blank(value):
        raise IdentifyError("Blank userId passed in identify event")
    before, after = template.split("{key}")
    return key_prefix(prefix) + before + js_string(value) + after


def user_key(user_id: Any, prefix: str = "") -> str:
    """The Redis key RudderStack writes for ``user_id``; raises IdentifyError when blank."""
    return template_key(USER_KEY_TEMPLATE, user_id, prefix)


def _flatten(obj: Mapping[Any, Any], parent: str, out: dict[str, Any]) -> None:
    # flat 5.0.2 with safe: true: recurse into non-empty plain objects only.
    for key, value in _js_items(obj):
        path = parent + "." + key if parent else key
        if isinstance(value, Mapping) and value:
            _flatten(value, path, out)
        else:
            out[path] = value


def render_field(value: Any) -> str | None:
    """A flattened leaf as stored in the hash, or None when RudderStack drops it."""
    if value is None or isinstance(value, Mapping):
        return None
    if isinstance(value, list | tuple):
        return js_json(value)
    return js_string(value)


def identify_fields(
    traits: Mapping[str, Any] | None = None,
    context_traits: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Hash fields for an identify: flatten(context.traits) overlaid by flatten(traits)."""
    if _holds_proto_key(context_traits) or _holds_proto_key(traits):
        raise IdentifyError(FORBIDDEN_PROTOTYPE)
    flat: dict[str, Any] = {}
    for source in (context_traits, traits):
        if isinstance(source, Mapping):
            _flatten(source, "", flat)
    fields = {}
    for name, value in flat.items():
        rendered = render_field(value)
        if rendered is not None:
            fields[name] = rendered
    if not fields:
        raise IdentifyError("context or context.traits or traits is empty")
    return fields


def encode_identify(event: Mapping[str, Any], prefix: str = "") -> tuple[str, dict[str, str]]:
    """One identify event → (Redis key, hash fields), exactly as RudderStack's HMSET."""
    event_type = event.get("type")
    if not isinstance(event_type, str) or event_type.lower() != "identify":
        raise IdentifyError("Only Identify calls are supported")
    key = user_key(event.get("userId"), prefix)
    context = event.get("context")
    context_traits = context.get("traits") if isinstance(context, Mapping) else None
    return key, identify_fields(event.get("traits"), context_traits)
