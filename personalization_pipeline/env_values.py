"""Typed values from environment variables: one parser for every setting read from the text.

`parse_env_value("SALESFORCE_MAX_ATTEMPTS", "3", int) == 3`. Booleans accept true/false, 1/0,
yes/no and on/off in any case (`bool("false")` would be True); `X | None` parses as X (an unset
or empty variable is the caller's default, never parsed); lists are comma-separated, items
stripped, empty items dropped. A value that does not parse fails naming the variable and what it
should hold, never the value: settings read this way include passwords and tokens.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from personalization_pipeline.errors import PermanentError

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})
# What each type's values look like, for the error message.
EXPECTED = {
    int: "a whole number such as 3",
    float: "a number such as 0.5",
    bool: "true or false (also 1/0, yes/no, on/off)",
}


class EnvValueError(PermanentError, ValueError):
    """An environment variable whose text is not a value of its setting's type."""


def parse_env_value(variable: str, text: str, annotation: Any) -> Any:
    """`text` (the value of `variable`) as a value of `annotation`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds = [kind for kind in typing.get_args(annotation) if kind is not type(None)]
        if len(kinds) != 1:
            raise TypeError(f"{variable}: no parser for {annotation}")
        return parse_env_value(variable, text, kinds[0])
    if origin in (list, tuple, frozenset, set):
        (item,) = {arg for arg in typing.get_args(annotation) if arg is not Ellipsis} or {str}
        parts = [part.strip() for part in text.split(",")]
        return origin(parse_env_value(variable, part, item) for part in parts if part)
    if annotation is str:
        return text
    if annotation is bool:
        word = text.strip().lower()
        if word in TRUE_WORDS | FALSE_WORDS:
            return word in TRUE_WORDS
    elif annotation in (int, float):
        try:
            return annotation(text.strip())
        except ValueError:
            pass
    else:
        raise TypeError(f"{variable}: no parser for {annotation}")
    # Raised outside the except block, so the ValueError (whose text holds the value) is not
    # chained to it.
    raise EnvValueError(
        f"{variable} must be {EXPECTED[annotation]}; the value set is not one "
        "(not shown, as it may be a secret): fix or unset it"
    )
