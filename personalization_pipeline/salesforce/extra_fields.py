"""Contact fields beyond the fixed columns: SALESFORCE_EXTRA_FIELDS, landed as extra columns of
raw.salesforce_contact.

Each field lands in a column named as the field lower-cased (`Churn_Score__c` ->
`churn_score__c`), typed from describe()'s `type`. `*` lands every field describe() lists except
those a fixed column already holds and compound fields (address, location): a REST query returns
those as nested objects and a Bulk query refuses them, so their components (MailingStreet,
MailingCity, ...) land instead. A Data Loader export has no describe: its extra fields are
columns of its header (`*`: every column no fixed column takes), typed VARCHAR, or as the
warehouse column already is when an earlier load created it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from personalization_pipeline.salesforce.mapping import FieldMappingError, closest
from personalization_pipeline.warehouse.tables import SALESFORCE_CONTACT, Column

SETTING = "SALESFORCE_EXTRA_FIELDS"
EVERY_FIELD = "*"
COMPOUND_TYPES = frozenset({"address", "location"})
# describe() type -> column type; every other type (string, picklist, id, reference, email,
# phone, textarea, time, ...) lands as VARCHAR.
COLUMN_TYPES = {
    "boolean": "BOOLEAN",
    "int": "BIGINT",
    "double": "DOUBLE",
    "currency": "DOUBLE",
    "percent": "DOUBLE",
    "date": "DATE",
    "datetime": "TIMESTAMPTZ",
}
DEFAULT_TYPE = "VARCHAR"
# Salesforce API names; anything else (an export's header can hold any text) is no column name.
API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ExtraField:
    field: str
    """As the org (or the export's header) spells it."""
    type: str
    """The column's DuckDB type."""

    @property
    def column(self) -> str:
        return self.field.lower()

    def spec(self) -> Column:
        return Column(self.column, self.type, f"Contact field {self.field} ({SETTING})")


def extra_fields_from_describe(
    requested: Sequence[str], describe: Mapping[str, Any], mapped: Mapping[str, str]
) -> tuple[ExtraField, ...]:
    """The extra fields to land, typed from describe(); `mapped` is Salesforce field -> fixed
    column. A named field that Contact lacks, or that is compound, fails naming the setting."""
    described = {field["name"]: field for field in describe.get("fields", [])}
    compound = {name for name, field in described.items() if field["type"] in COMPOUND_TYPES}
    chosen = _chosen(requested, list(described), mapped, "Contact has no field", skip=compound)
    for name in chosen:
        if name in compound:
            parts = [n for n, f in described.items() if f.get("compoundFieldName") == name]
            raise FieldMappingError(
                f"Contact field {name} (in {SETTING}) is a compound {described[name]['type']} "
                "field, which a query cannot return as one column: name its components instead"
                + (f" ({', '.join(parts)})" if parts else "")
            )
    return tuple(
        ExtraField(name, COLUMN_TYPES.get(described[name]["type"], DEFAULT_TYPE)) for name in chosen
    )


def extra_fields_from_export(
    requested: Sequence[str],
    header: Sequence[str],
    mapped: Mapping[str, str],
    existing_types: Mapping[str, str],
    path: str,
) -> tuple[ExtraField, ...]:
    """The extra fields to land from an export's columns. Without describe() the type is
    VARCHAR, unless the warehouse column exists (`existing_types`: column -> type), whose type
    is kept, so an API-typed column still loads from an export."""
    chosen = _chosen(requested, header, mapped, f"{path} has no column")
    return tuple(
        ExtraField(name, existing_types.get(name.lower(), DEFAULT_TYPE)) for name in chosen
    )


def _chosen(
    requested: Iterable[str],
    available: Sequence[str],
    mapped: Mapping[str, str],
    missing: str,
    skip: Iterable[str] = (),
) -> list[str]:
    """The fields to land, spelled as `available` spells them (SOQL and the setting ignore
    case), each once, none that a fixed column already takes."""
    by_lower = {name.lower(): name for name in available}
    named = [name for name in requested if name != EVERY_FIELD]
    absent = [name for name in named if name.lower() not in by_lower]
    if absent:
        raise FieldMappingError(
            f"{missing} "
            + "; no ".join(f"{name} (in {SETTING}; {closest(name, available)})" for name in absent)
            + f". Fix {SETTING} or create the field in Salesforce."
        )
    chosen = [by_lower[name.lower()] for name in named]
    landed = {field.lower(): column for field, column in mapped.items()}
    if EVERY_FIELD in requested:
        left_out = landed.keys() | {name.lower() for name in skip}
        chosen += [name for name in available if name.lower() not in left_out]
    unique: dict[str, str] = {}
    for name in chosen:
        column = name.lower()
        if not API_NAME.match(name):
            raise FieldMappingError(
                f"{name!r} (in {SETTING}) is not a Salesforce field name (letters, digits and _): "
                f"leave it out of {SETTING} (name the fields you want instead of *)"
            )
        if column in landed:
            raise FieldMappingError(
                f"Contact field {name} (in {SETTING}) already lands in column {landed[column]}: "
                f"leave it out of {SETTING}"
            )
        if column in SALESFORCE_CONTACT.column_names:
            raise FieldMappingError(
                f"Contact field {name} (in {SETTING}) would land in column {column}, one of "
                f"raw.salesforce_contact's own columns: leave it out of {SETTING} (name the "
                "fields you want instead of *)"
            )
        unique.setdefault(column, name)
    return list(unique.values())
