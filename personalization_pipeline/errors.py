"""Errors that tell the user what to fix."""

from __future__ import annotations

from collections.abc import Iterable


class PermanentError(Exception):
    """Fails the same way on every attempt (bad input, configuration): retrying cannot help.

    The source assets fail at once on these instead of going through their retry policy.
    """


class SourceFileError(PermanentError, ValueError):
    """A source file that cannot be loaded as it is."""


class MissingColumnsError(SourceFileError):
    """A source file lacks columns the pipeline needs."""


class SourceShrankError(SourceFileError):
    """A source delivered far fewer rows than last time; the previous load was kept."""


def require_columns(source: str, found: Iterable[str], required: Iterable[str]) -> None:
    found = list(found)
    missing = [column for column in required if column not in found]
    if missing:
        raise MissingColumnsError(
            f"{source} is missing required column(s) {', '.join(missing)}; "
            f"columns found: {', '.join(found) or '(none)'}"
        )
