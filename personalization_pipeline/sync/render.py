"""Rendering DuckDB values as identify strings and rows as RESP, in DuckDB SQL.

Values are rendered in DuckDB SQL where the JavaScript rules coincide with a plain cast
(VARCHAR; BOOLEAN; integers within ±2**53; doubles whose shortest repr is positional, which
DuckDB prints as Python's ``repr``) and by the identify module's ``js_number`` / ``js_json``
(as DuckDB functions) for everything else. The tests compare the two on random data. LIST
columns are written as ``JSON.stringify``; DATE / TIME / TIMESTAMP / UUID as DuckDB's ISO
text. STRUCT / MAP / JSON / BLOB are refused: select their members as columns named with dots
(``"plan.tier"``) in the source query.

A row's HSET / HDEL commands are rendered to RESP text by one SQL ``concat`` (:func:`resp_sql`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from decimal import Decimal

import duckdb

from personalization_pipeline.sync.identify import js_json, js_number, parse_json

__all__ = ["render_sql"]

_CRLF = "\r\n"


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _resp_bulk(text: str) -> str:
    """A constant RESP bulk string (length in UTF-8 bytes)."""
    return f"${len(text.encode())}{_CRLF}{text}{_CRLF}"


_UDF_NUMBER = "pp_sync_js_number"
_UDF_JSON = "pp_sync_js_json"


def register_udfs(con: duckdb.DuckDBPyConnection) -> None:
    for name, function in (
        (_UDF_NUMBER, lambda text: js_number(Decimal(text))),
        (_UDF_JSON, lambda text: js_json(parse_json(text, allow_non_finite=True))),
    ):
        # Registering twice on one connection raises; the first registration stays.
        with contextlib.suppress(duckdb.Error):
            con.create_function(name, function, ["VARCHAR"], "VARCHAR", side_effects=False)


_EXACT_INTS = {"TINYINT", "SMALLINT", "INTEGER", "UTINYINT", "USMALLINT", "UINTEGER"}
_WIDE_INTS = {"BIGINT", "UBIGINT", "HUGEINT", "UHUGEINT"}
_AS_TEXT = ("DATE", "TIME", "TIMESTAMP", "UUID", "INTERVAL")


def _as_double(expr: str, duck_type: str) -> str | None:
    """``expr`` as a DOUBLE when its type is rendered as one, else None."""
    kind = duck_type.upper()
    decimal = re.match(r"DECIMAL\((\d+),\s*\d+\)", kind)
    if kind in ("DOUBLE", "FLOAT") or (decimal and int(decimal.group(1)) <= 15):
        # A DECIMAL's unscaled value and power of ten are exact doubles: the cast rounds once.
        return f"CAST({expr} AS DOUBLE)"
    return None


def text_sql(expr: str, duck_type: str) -> str | None:
    """The text :func:`render_sql` reads several times for this type (doubles), or None.
    Computed once in a subquery and passed back as ``text``, it saves a third of the cost
    of rendering a row (DuckDB does not share it between the branches of a CASE)."""
    double = _as_double(expr, duck_type)
    return None if double is None else f"CAST({double} AS VARCHAR)"


def _render_double(expr: str, text: str) -> str:
    # DuckDB prints doubles as Python's repr; inside [1e-4, 1e16) repr is positional and
    # JS prints the same digits (minus a trailing ".0"). Elsewhere the identify module decides.
    return (
        f"CASE WHEN {expr} = 0 OR (abs({expr}) >= 0.0001 AND abs({expr}) < 1e16"
        f" AND {text} NOT LIKE '%e%') THEN"
        f" CASE WHEN suffix({text}, '.0') THEN {text}[:-3] ELSE {text} END"
        f" ELSE {_UDF_NUMBER}({text}) END"
    )


def render_sql(expr: str, duck_type: str, text: str | None = None) -> str:
    """SQL that renders ``expr`` exactly as ``identify.js_string`` / ``js_json`` would;
    ``text``: a column holding :func:`text_sql` of ``expr``, where it has one."""
    kind = duck_type.upper()
    if kind == "VARCHAR":
        return expr
    if kind == "BOOLEAN" or kind in _EXACT_INTS:
        return f"CAST({expr} AS VARCHAR)"
    if kind in _WIDE_INTS:
        return (
            f"CASE WHEN {expr} BETWEEN -9007199254740992 AND 9007199254740992"
            f" THEN CAST({expr} AS VARCHAR) ELSE {_UDF_NUMBER}(CAST({expr} AS VARCHAR)) END"
        )
    double = _as_double(expr, duck_type)
    if double is not None:
        return _render_double(double, text or f"CAST({double} AS VARCHAR)")
    if kind.startswith("DECIMAL"):
        return f"{_UDF_NUMBER}(CAST({expr} AS VARCHAR))"
    if kind.endswith("]"):
        return f"{_UDF_JSON}(CAST(to_json({expr}) AS VARCHAR))"
    if kind.startswith(_AS_TEXT):
        return f"CAST({expr} AS VARCHAR)"
    raise TypeError(
        f"column {expr} has type {duck_type}, which has no identify rendering: select its "
        'members as columns named with dots (e.g. s.tier AS "plan.tier") or cast it to VARCHAR'
    )


def resp_sql(
    field_names: Sequence[str], *, key: str, present: str, removed: str, values: Sequence[str]
) -> tuple[str, str]:
    """(RESP text of a row, number of commands it holds), from SQL expressions for the row's
    Redis ``key``, the bit masks of the fields it has (``present``: HSET) and of those to
    remove (``removed``: HDEL), and its rendered ``values`` (NULL where absent).

    One flat ``concat`` per row: it skips NULLs, so each piece of a null field's fragment is
    NULL and vanishes. Nested ``concat`` per field (or chains of ``||``) copy every fragment
    once more, which made rendering half again as slow. Each fragment starts with the CRLF
    that ends what comes before it, so a field needs two conditional pieces, not three (a
    tenth of the rendering time). The values must all be NULL when ``present`` is 0, so
    that the row's HSET vanishes whole.
    """
    crlf = literal(_CRLF)
    head = f"{literal(_CRLF + '$')}, strlen({key}), {crlf}, {key}"
    hset_fields = ", ".join(
        f"CASE WHEN {value} IS NOT NULL THEN {literal(_CRLF + _resp_bulk(name) + '$')} END,"
        f" strlen({value}), CASE WHEN {value} IS NOT NULL THEN {crlf} END, {value}"
        for name, value in zip(field_names, values, strict=True)
    )
    hdel_fields = ", ".join(
        f"CASE WHEN ({removed} >> {i}) & 1 = 1 THEN {literal(_resp_bulk(name))} END"
        for i, name in enumerate(field_names)
    )
    resp = (
        f"concat(CASE WHEN {present} <> 0 THEN concat('*', 2 + 2 * bit_count({present}),"
        f" {literal(_CRLF + '$4' + _CRLF + 'HSET')}, {head}) END, {hset_fields},"
        f" CASE WHEN {present} <> 0 THEN {crlf} END,"
        f" CASE WHEN {removed} <> 0 THEN concat('*', 2 + bit_count({removed}),"
        f" {literal(_CRLF + '$4' + _CRLF + 'HDEL')}, {head}, {crlf}, {hdel_fields}) END)"
    )
    commands = f"CAST({present} <> 0 AS INTEGER) + CAST({removed} <> 0 AS INTEGER)"
    return resp, commands
