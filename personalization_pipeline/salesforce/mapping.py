"""Which Contact fields land in which raw.salesforce_contact columns, checked against describe."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from personalization_pipeline.errors import PermanentError

# Columns of raw.salesforce_contact that come from Salesforce, and the system fields that
# every org has. The columns for user id, email, names and membership status are configurable.
SYSTEM_FIELDS = {"id": "Id", "system_modstamp": "SystemModstamp", "is_deleted": "IsDeleted"}


class FieldMappingError(PermanentError, ValueError):
    """A configured field does not exist on Contact in this org."""


def closest(field: str, available: Sequence[str]) -> str:
    """The existing names closest to a misspelt `field`, for an error message."""
    by_lower = {name.lower(): name for name in available}
    close = difflib.get_close_matches(field, available, n=3, cutoff=0.5) or (
        difflib.get_close_matches(field.lower(), list(by_lower), n=3, cutoff=0.5)
    )
    if not close:
        return "no similar field"
    return f"closest: {', '.join(by_lower.get(c, c) for c in close)}"


def check_field_mapping(fields: Mapping[str, str], describe: Mapping[str, Any]) -> dict[str, str]:
    """Return `fields` (Salesforce field -> column) with names spelled as the org spells them.

    SOQL field names are case-insensitive, so only a name that matches no field in any case
    fails; the error names it and the closest existing fields.
    """
    available = [f["name"] for f in describe.get("fields", [])]
    by_lower = {name.lower(): name for name in available}
    problems = []
    checked: dict[str, str] = {}
    for field, column in fields.items():
        actual = by_lower.get(field.lower())
        if actual is None:
            problems.append(f"{field} (for column {column}; {closest(field, available)})")
        else:
            checked[actual] = column
    if problems:
        raise FieldMappingError(
            "Contact has no field "
            + "; no field ".join(problems)
            + ". Fix the SALESFORCE_*_FIELD settings or create the field in Salesforce."
        )
    return checked
