"""Build analytics.user_profiles: the profile users left-joined to every trait source.

``assets/sql/profile_users.sql`` first builds ``analytics.profile_users`` (one row per app user
id, from live Salesforce contacts, with the email their profile is matched on). Then each trait
source contributes its traits: a source keyed by ``user_id`` joins on the id, one keyed by
``email`` on the profile's email, both trimmed and lower-cased. ``updated_at`` is the latest of
the sources' ``updated_at`` columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from personalization_pipeline.errors import PermanentError
from personalization_pipeline.traits import PROFILE_USERS, TraitSource

__all__ = ["USER_PROFILES_TABLE", "ProfileBuild", "build_user_profiles", "user_profiles_sql"]

USER_PROFILES_TABLE = "analytics.user_profiles"
EXAMPLES = 3


class TraitSourceDataError(PermanentError, ValueError):
    """A trait source's table cannot be joined as registered; the message says how to fix it."""


@dataclass(frozen=True)
class ProfileBuild:
    profiles: int
    traits_set: dict[str, int]
    """Per trait, the profiles that have it (non-null)."""


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def key_sql(source: TraitSource, column: str) -> str:
    if source.key == "email":
        return f"lower(trim(CAST({column} AS VARCHAR)))"
    return column


def source_sql(source: TraitSource) -> str:
    """One row per key of ``source``, its traits named as in Redis, ``_key`` and ``_updated_at``."""
    key = key_sql(source, quoted(source.key_column))
    traits = ", ".join(
        f"{quoted(column)} AS {quoted(trait)}" for column, trait in source.trait_columns.items()
    )
    updated = f"CAST({quoted(source.updated_at)} AS TIMESTAMP)" if source.updated_at else "NULL"
    sql = (
        f"SELECT {key} AS _key, {traits}, {updated} AS _updated_at FROM {source.table} "
        f"WHERE {quoted(source.key_column)} IS NOT NULL"
    )
    if source.prefer:
        sql += f" QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {source.prefer}) = 1"
    return sql


def user_profiles_sql(sources: Sequence[TraitSource]) -> str:
    ctes = ",\n".join(f"s{i} AS ({source_sql(source)})" for i, source in enumerate(sources))
    columns = ["users.user_id"]
    joins = []
    for i, source in enumerate(sources):
        columns += [f"s{i}.{quoted(trait)}" for trait in source.trait_columns.values()]
        on = "users.email_key" if source.key == "email" else "users.user_id"
        joins.append(f"LEFT JOIN s{i} ON s{i}._key = {on}")
    updated = [f"s{i}._updated_at" for i, source in enumerate(sources) if source.updated_at]
    # greatest() skips nulls: a source without a date for this user does not hide the others'.
    columns.append(
        f"greatest({', '.join(updated)}) AS updated_at" if updated
        else "CAST(NULL AS TIMESTAMP) AS updated_at"
    )  # fmt: skip
    return (
        f"CREATE OR REPLACE TABLE {USER_PROFILES_TABLE} AS\nWITH {ctes}\n"
        f"SELECT {', '.join(columns)}\nFROM {PROFILE_USERS} AS users\n"
        + "\n".join(joins)
        + "\nORDER BY users.user_id"
    )


def check_sources(connection: duckdb.DuckDBPyConnection, sources: Sequence[TraitSource]) -> None:
    """Every source's table has its columns and, unless it says which row to prefer, one row per
    key; otherwise a message naming the source and what to change."""
    for source in sources:
        try:
            present = set(connection.sql(f"SELECT * FROM {source.table} LIMIT 0").columns)
        except duckdb.CatalogException as error:
            raise TraitSourceDataError(
                f"trait source {source.name}: table {source.table} does not exist "
                f"({error}); materialize {source.asset_key.to_user_string()} first"
            ) from error
        needed = [source.key_column, *source.trait_columns]
        needed += [source.updated_at] if source.updated_at else []
        missing = [column for column in needed if column not in present]
        if missing:
            raise TraitSourceDataError(
                f"trait source {source.name}: {source.table} has no column {', '.join(missing)} "
                f"(it has {', '.join(sorted(present))})"
            )
        if source.prefer:
            continue
        key = key_sql(source, quoted(source.key_column))
        repeated = connection.execute(
            f"SELECT {key}, count(*) FROM {source.table} WHERE {quoted(source.key_column)} "
            f"IS NOT NULL GROUP BY 1 HAVING count(*) > 1 ORDER BY 2 DESC, 1 LIMIT {EXAMPLES}"
        ).fetchall()
        if repeated:
            examples = ", ".join(f"{value!r} ({rows} rows)" for value, rows in repeated)
            raise TraitSourceDataError(
                f"trait source {source.name}: {source.table} holds several rows for one "
                f"{source.key} (e.g. {examples}); deduplicate it, or set prefer= to the ORDER BY "
                "that picks the row to keep"
            )


def build_user_profiles(
    connection: duckdb.DuckDBPyConnection, sources: Sequence[TraitSource], profile_users_sql: Path
) -> ProfileBuild:
    """Rebuild profile_users and user_profiles from the registered sources."""
    connection.execute(profile_users_sql.read_text())
    check_sources(connection, sources)
    connection.execute(user_profiles_sql(sources))
    traits = [trait for source in sources for trait in source.trait_columns.values()]
    counts = connection.execute(
        "SELECT count(*)"
        + "".join(f", count({quoted(trait)})" for trait in traits)
        + f" FROM {USER_PROFILES_TABLE}"
    ).fetchone()
    return ProfileBuild(counts[0], dict(zip(traits, counts[1:], strict=True)))
