"""Each warehouse table's columns, declared once.

A `Table` generates its DDL, the column lists its SQL needs, and (in the Dagster shell,
`metadata.column_schema`) the column schema the UI shows. Changing a table is a change here
plus a migration in `schema.py` for warehouses that already exist.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str = ""
    constraint: str = ""
    """``PRIMARY KEY`` or ``NOT NULL``; empty for a nullable column."""

    def ddl(self) -> str:
        return " ".join(filter(None, [f'"{self.name}"', self.type, self.constraint]))


@dataclass(frozen=True)
class Table:
    name: str
    """Schema-qualified: ``raw.salesforce_contact``."""
    description: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    """A primary key of several columns (one column says so in its constraint)."""

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    def create_sql(self) -> str:
        parts = [column.ddl() for column in self.columns]
        if self.primary_key:
            parts.append(f"PRIMARY KEY ({', '.join(self.primary_key)})")
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n    " + ",\n    ".join(parts) + "\n);"

    def select_list(self, exclude: tuple[str, ...] = (), alias: str = "") -> str:
        """``a, b, c`` (or ``x.a, x.b``) in table order, for INSERT and SELECT lists."""
        head = f"{alias}." if alias else ""
        return ", ".join(f"{head}{name}" for name in self.column_names if name not in exclude)


SALESFORCE_CONTACT = Table(
    "raw.salesforce_contact",
    "Salesforce Contacts as landed, deleted ones kept with is_deleted.",
    (
        Column("id", "VARCHAR", "Salesforce Contact Id", "PRIMARY KEY"),
        Column("user_id", "VARCHAR", "App user id (SALESFORCE_USER_ID_FIELD)"),
        Column("email", "VARCHAR"),
        Column("first_name", "VARCHAR"),
        Column("last_name", "VARCHAR"),
        Column("membership_status", "VARCHAR", "SALESFORCE_MEMBERSHIP_STATUS_FIELD"),
        Column("system_modstamp", "TIMESTAMP", "Last change in Salesforce, UTC"),
        Column("is_deleted", "BOOLEAN", "Soft or hard deleted in Salesforce", "NOT NULL"),
        Column("loaded_at", "TIMESTAMP", "When this row last changed here, UTC", "NOT NULL"),
    ),
)
# What Salesforce delivers for a contact: every column but the landing time.
CONTACT_FIELDS = tuple(name for name in SALESFORCE_CONTACT.column_names if name != "loaded_at")

INCOME_ENRICHMENT = Table(
    "raw.income_enrichment",
    "The enrichment vendor's latest drop, replaced whole by each load.",
    (
        Column("email", "VARCHAR"),
        Column("income_bracket", "VARCHAR"),
        Column("enriched_at", "DATE"),
        Column("source_file", "VARCHAR", "The file this row came from", "NOT NULL"),
        Column("loaded_at", "TIMESTAMP", constraint="NOT NULL"),
        Column("source_line", "BIGINT", "The row's line (CSV) or row number (Parquet)"),
    ),
)

EVENTS = Table(
    "raw.events",
    "Events from the gateway's streams, one row per messageId; timestamps UTC.",
    (
        Column("message_id", "VARCHAR", "One row per messageId", "PRIMARY KEY"),
        Column("type", "VARCHAR", "Lowercased: identify, track, page, ..."),
        Column("event", "VARCHAR", "Track name"),
        Column("user_id", "VARCHAR"),
        Column("anonymous_id", "VARCHAR"),
        Column(
            "timestamp", "TIMESTAMP", "When it happened, as resolved by the gateway", "NOT NULL"
        ),
        Column("received_at", "TIMESTAMP", "At the gateway", "NOT NULL"),
        Column("landed_at", "TIMESTAMP", constraint="NOT NULL"),
        Column("stream", "VARCHAR", constraint="NOT NULL"),
        Column("entry_id", "VARCHAR", "Of the first entry that carried it", "NOT NULL"),
        Column("payload", "JSON", "The event exactly as accepted", "NOT NULL"),
    ),
)

EVENTS_REJECTED = Table(
    "raw.events_rejected",
    "Stream entries that were not usable events, with the reason.",
    (
        Column("stream", "VARCHAR", constraint="NOT NULL"),
        Column("entry_id", "VARCHAR", constraint="NOT NULL"),
        Column("reason", "VARCHAR", constraint="NOT NULL"),
        Column("raw", "VARCHAR", "The entry's text, to repair and replay by hand"),
        Column("rejected_at", "TIMESTAMP", constraint="NOT NULL"),
    ),
    primary_key=("stream", "entry_id"),
)

EVENTS_TRIMMED = Table(
    "raw.events_trimmed",
    "Events the streams' MAXLEN removed before they landed: lost.",
    (
        Column("detected_at", "TIMESTAMP", constraint="NOT NULL"),
        Column("stream", "VARCHAR", constraint="NOT NULL"),
        Column("entries", "BIGINT", "How many were lost", "NOT NULL"),
        Column("how", "VARCHAR", constraint="NOT NULL"),
        Column("entry_ids", "VARCHAR[]", "Known only for entries that were pending", "NOT NULL"),
    ),
)

IDENTITIES = Table(
    "analytics.identities",
    "Which emails an app user identified with, from identify events.",
    (
        Column("user_id", "VARCHAR", constraint="NOT NULL"),
        Column("email", "VARCHAR", "Trimmed and lowercased, for matching", "NOT NULL"),
        Column("first_seen", "TIMESTAMP", constraint="NOT NULL"),
        Column("last_seen", "TIMESTAMP", constraint="NOT NULL"),
    ),
    primary_key=("user_id", "email"),
)

PRODUCTS = Table(
    "raw.products",
    "The product catalog as the last file drop held it (warehouse/catalog.py).",
    (
        Column("sku", "VARCHAR", constraint="NOT NULL"),
        Column("name", "VARCHAR"),
        Column("category", "VARCHAR", constraint="NOT NULL"),
        Column("price", "DECIMAL(12, 2)", constraint="NOT NULL"),
        Column("member_only", "BOOLEAN", "Shown to loyalty members only", "NOT NULL"),
        Column("source_file", "VARCHAR", constraint="NOT NULL"),
        Column("loaded_at", "TIMESTAMP", constraint="NOT NULL"),
        Column("source_line", "BIGINT", constraint="NOT NULL"),
    ),
)

ORDERS = Table(
    "raw.orders",
    "Historical order lines as the last file drop held them.",
    (
        Column("order_id", "VARCHAR", constraint="NOT NULL"),
        Column("user_id", "VARCHAR", constraint="NOT NULL"),
        Column("sku", "VARCHAR", constraint="NOT NULL"),
        Column("ordered_at", "TIMESTAMP", "UTC", "NOT NULL"),
        Column("source_file", "VARCHAR", constraint="NOT NULL"),
        Column("loaded_at", "TIMESTAMP", constraint="NOT NULL"),
        Column("source_line", "BIGINT", constraint="NOT NULL"),
    ),
)

# Built by assets/sql/product_similarity.sql, not by DDL; declared for the model asset's column
# schema and checked against what the SQL builds (tests/test_recommendation_model.py).
PRODUCT_SIMILARITY = Table(
    "analytics.product_similarity",
    "The model: each SKU's top neighbours by co-purchase cosine, with what the rules need.",
    (
        Column("sku", "VARCHAR"),
        Column("rank", "INTEGER", "1 = most similar"),
        Column("neighbour_sku", "VARCHAR"),
        Column("similarity", "DOUBLE", "Cosine over buyers, 0-1"),
        Column("co_buyers", "BIGINT", "Buyers of both"),
        Column("category", "VARCHAR", "The neighbour's"),
        Column("price_band", "INTEGER", "The neighbour's, 1-5 within its category"),
        Column("member_only", "BOOLEAN", "The neighbour's"),
    ),
)

REJECTED_LINES = Table(
    "raw.rejected_lines",
    "Lines of a file drop that could not land, with the reason, to repair by hand.",
    (
        Column("table_name", "VARCHAR", "The table the line was meant for", "NOT NULL"),
        Column("source_file", "VARCHAR", constraint="NOT NULL"),
        Column("source_line", "BIGINT", constraint="NOT NULL"),
        Column("reason", "VARCHAR", constraint="NOT NULL"),
        Column("line", "VARCHAR", "The line's values as JSON", "NOT NULL"),
        Column("rejected_at", "TIMESTAMP", constraint="NOT NULL"),
    ),
)

# Tables the warehouse creates up front (the rest are built by SQL models).
LANDED_TABLES = (
    SALESFORCE_CONTACT,
    INCOME_ENRICHMENT,
    EVENTS,
    EVENTS_REJECTED,
    EVENTS_TRIMMED,
    IDENTITIES,
    PRODUCTS,
    ORDERS,
    REJECTED_LINES,
)
