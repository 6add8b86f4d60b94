"""Errors that tell the user what to fix."""

from __future__ import annotations

from collections.abc import Iterable


class MissingColumnsError(ValueError):
    """A source file lacks columns the pipeline needs."""


def require_columns(source: str, found: Iterable[str], required: Iterable[str]) -> None:
    found = list(found)
    missing = [column for column in required if column not in found]
    if missing:
        raise MissingColumnsError(
            f"{source} is missing required column(s) {', '.join(missing)}; "
            f"columns found: {', '.join(found) or '(none)'}"
        )
