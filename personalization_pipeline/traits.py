"""Trait sources: the tables `user_profiles` is assembled from, one registration each.

A :class:`TraitSource` names an asset, the warehouse table it builds, the column that keys that
table to a user (an app ``user_id``, or an ``email``) and the columns that become traits (column
→ trait name). `user_profiles` is the profile users (live Salesforce contacts with an app user
id, or linked to one by email) left-joined to every registered source; the profile sync carries
every trait; the asset graph shows each source upstream of `user_profiles`.

Sources are registered by being defined in a module of a trait package (``assets/traits``):
:func:`discover` imports every module there and collects the ``TraitSource`` objects. A source
whose trait name another source already declares, or whose key or trait column is missing from
the column schema its asset declares, is refused when the definitions load
(:class:`TraitSourceError`, naming both sources).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Literal

import dagster as dg

from personalization_pipeline.sync.identify import forbidden_trait_name

__all__ = ["KEYS", "PROFILE_USERS", "TraitSource", "TraitSourceError", "check", "discover"]

# The table of profile users the sources are joined to: one row per app user id, with the
# email their profile is matched on (see assets/sql/profile_users.sql).
PROFILE_USERS = "analytics.profile_users"
KEYS = ("user_id", "email")
# Columns of user_profiles that are not traits of any source.
RESERVED = frozenset({"user_id", "updated_at"})
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class TraitSourceError(ValueError):
    """A trait source that cannot be joined; raised while the definitions load."""


@dataclass(frozen=True)
class TraitSource:
    """One table whose columns become profile traits."""

    name: str
    """Unique among sources; names the source in errors and in user_profiles' metadata."""
    asset: dg.AssetKey | dg.AssetsDefinition | dg.AssetSpec
    """What builds ``table``; user_profiles runs after it (lineage and jobs follow)."""
    table: str
    """Warehouse table or view, schema-qualified."""
    traits: Mapping[str, str] | Sequence[str]
    """Column → trait name (the Redis hash field); a plain list keeps the column names."""
    key: Literal["user_id", "email"] = "user_id"
    """What ``key_column`` holds. Emails match case- and space-insensitively."""
    key_column: str = ""
    """Defaults to ``key``."""
    prefer: str = ""
    """SQL ORDER BY that picks one row when the table holds several for one key (the first
    wins), e.g. ``enriched_at DESC NULLS LAST``. Without it the table must hold one per key."""
    updated_at: str = ""
    """A column saying when the row last changed; user_profiles.updated_at is the latest."""
    trait_columns: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        traits = self.traits
        if not isinstance(traits, Mapping):
            traits = {column: column for column in traits}
        object.__setattr__(self, "trait_columns", dict(traits))
        if not self.key_column:
            object.__setattr__(self, "key_column", self.key)
        problems = []
        if not _NAME.match(self.name):
            problems.append(f"its name must match {_NAME.pattern}")
        if self.key not in KEYS:
            problems.append(f"key must be one of {KEYS}, not {self.key!r}")
        if not self.trait_columns:
            problems.append("it declares no traits")
        for trait in self.trait_columns.values():
            if not _NAME.match(trait) or trait in RESERVED or forbidden_trait_name(trait):
                problems.append(
                    f"trait name {trait!r} must match {_NAME.pattern} and not be "
                    f"{' or '.join(sorted(RESERVED))}"
                )
        if problems:
            raise TraitSourceError(f"trait source {self.name!r}: " + "; ".join(problems))

    @property
    def asset_key(self) -> dg.AssetKey:
        return self.asset if isinstance(self.asset, dg.AssetKey) else self.asset.key

    def declared_types(self) -> dict[str, str] | None:
        """Column → type of ``table`` from the asset's column schema, when the asset declares
        one for this very table; None when nothing is declared (checked at run time instead)."""
        if isinstance(self.asset, dg.AssetKey):
            return None
        specs = getattr(self.asset, "specs", None) or [self.asset]
        for spec in specs:
            metadata = spec.metadata or {}
            schema = metadata.get("dagster/column_schema")
            table = metadata.get("dagster/table_name")
            if spec.key == self.asset_key and schema is not None and table == self.table:
                return {column.name: column.type for column in schema.columns}
        return None


def check(sources: Sequence[TraitSource]) -> list[TraitSource]:
    """The sources, refused if two share a name or a trait, or a column is not declared."""
    names: dict[str, TraitSource] = {}
    owners: dict[str, TraitSource] = {}
    for source in sources:
        if source.name in names:
            raise TraitSourceError(
                f"two trait sources are named {source.name!r} (tables {names[source.name].table} "
                f"and {source.table}); rename one"
            )
        names[source.name] = source
        for trait in source.trait_columns.values():
            other = owners.setdefault(trait, source)
            if other is not source:
                raise TraitSourceError(
                    f"trait {trait!r} is declared by two trait sources, {other.name} "
                    f"({other.table}) and {source.name} ({source.table}); a profile field has "
                    "one source: rename the trait in one of them"
                )
        declared = source.declared_types()
        if declared is not None:
            needed = [source.key_column, *source.trait_columns]
            missing = [column for column in needed if column not in declared]
            if missing:
                raise TraitSourceError(
                    f"trait source {source.name}: {source.table} has no column "
                    f"{', '.join(missing)} (its asset {source.asset_key.to_user_string()} "
                    f"declares {', '.join(sorted(declared))})"
                )
    return list(sources)


def discover(*modules: ModuleType) -> list[TraitSource]:
    """Every TraitSource defined at the top of ``modules``, and of the modules of any package
    among them, in module-name order."""
    found: list[TraitSource] = []
    for module in sorted(expand(modules), key=lambda module: module.__name__):
        found += [value for value in vars(module).values() if isinstance(value, TraitSource)]
    return check(found)


def expand(modules: Sequence[ModuleType]) -> list[ModuleType]:
    """Packages replaced by their modules, imported."""
    out = []
    for module in modules:
        if hasattr(module, "__path__"):
            out += [
                importlib.import_module(f"{module.__name__}.{info.name}")
                for info in pkgutil.iter_modules(module.__path__)
            ]
        else:
            out.append(module)
    return out
