"""The columns one landing writes to raw.salesforce_contact (the fixed ones, then the configured
extra fields) and the SQL that merges a page of contacts into them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from personalization_pipeline.salesforce.extra_fields import ExtraField
from personalization_pipeline.warehouse.tables import CONTACT_FIELDS

# The fixed columns cast on the way in, and what their values must be.
CAST_COLUMNS = {"system_modstamp": "TIMESTAMPTZ", "is_deleted": "BOOLEAN"}


def _quoted(column: str) -> str:
    return f'"{column}"'


def _cast(column: str, kind: str) -> str:
    return f"CAST({_quoted(column)} AS {kind}) AS {_quoted(column)}"


@dataclass(frozen=True)
class ContactColumns:
    fixed: Mapping[str, str]
    """Salesforce field -> fixed column (the id, system and configured fields)."""
    extras: tuple[ExtraField, ...] = field(default=())

    @property
    def fields(self) -> dict[str, str]:
        """Every Salesforce field the landing reads -> its column."""
        return {**self.fixed, **{extra.field: extra.column for extra in self.extras}}

    @property
    def names(self) -> list[str]:
        """What Salesforce delivers for a contact: every written column but the landing time."""
        return [*CONTACT_FIELDS, *(extra.column for extra in self.extras)]

    @property
    def casts(self) -> dict[str, str]:
        """The columns cast on the way in -> their type (a failed cast names the value)."""
        return {**CAST_COLUMNS, **{extra.column: extra.type for extra in self.extras}}

    def stage_sql(self) -> str:
        """contact_page (all values text or null) -> temp table incoming, one row per id."""
        plain = [_quoted(c) for c in CONTACT_FIELDS if c not in CAST_COLUMNS]
        extras = [
            f"CAST({_quoted(x.column)} AS {x.type}) AS {_quoted(x.column)}" for x in self.extras
        ]
        return f"""
CREATE OR REPLACE TEMP TABLE incoming AS
SELECT {", ".join(plain)},
       -- REST sends 2024-01-02T03:04:05.000+0000, Bulk 2.0 and exports 2024-01-02T03:04:05.000Z
       CAST(system_modstamp AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS system_modstamp,
       coalesce(CAST(is_deleted AS BOOLEAN), false) AS is_deleted
       {"".join(", " + extra for extra in extras)}
FROM contact_page
QUALIFY row_number() OVER (PARTITION BY id ORDER BY system_modstamp DESC) = 1
"""

    def count_sql(self) -> str:
        """Before the merge: new ids, existing rows whose values change, rows that become
        deleted, and the page's newest SystemModstamp."""
        changed = " OR ".join(
            f"i.{_quoted(c)} IS DISTINCT FROM r.{_quoted(c)}" for c in self.names if c != "id"
        )
        return f"""
SELECT count(*) FILTER (WHERE r.id IS NULL),
       count(*) FILTER (WHERE r.id IS NOT NULL AND i.system_modstamp >= r.system_modstamp AND (
           {changed})),
       count(*) FILTER (WHERE r.id IS NOT NULL AND i.is_deleted AND NOT r.is_deleted
                        AND i.system_modstamp >= r.system_modstamp),
       max(i.system_modstamp)
FROM incoming AS i LEFT JOIN raw.salesforce_contact AS r USING (id)
"""

    def merge_sql(self) -> str:
        """Never lets an older copy of a record overwrite a newer one. Columns it does not name
        (an extra field no longer configured) keep their values."""
        written = [*self.names, "loaded_at"]
        updates = ", ".join(f"{_quoted(c)} = excluded.{_quoted(c)}" for c in written if c != "id")
        return f"""
INSERT INTO raw.salesforce_contact ({", ".join(_quoted(c) for c in written)})
SELECT {", ".join(_quoted(c) for c in self.names)}, now() AT TIME ZONE 'UTC' FROM incoming
ON CONFLICT (id) DO UPDATE SET
    {updates}
WHERE excluded.system_modstamp >= salesforce_contact.system_modstamp
"""
