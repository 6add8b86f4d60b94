"""Write warehouse rows to Redis as identify-shaped hashes, exactly as RudderStack does."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from personalization_pipeline.sync.identify import IdentifyError, identify_fields, user_key

BATCH_SIZE = 1000


@dataclass(frozen=True)
class WriteResult:
    written: int
    rejected: dict[str, int]


def write_identify_rows(
    client: redis.Redis,
    rows: Iterable[Sequence[object]],
    columns: Sequence[str],
    key_column: str,
    prefix: str = "",
) -> WriteResult:
    """HSET one hash per row: key [prefix:]user:<key>, the other columns as traits.

    Rows that RudderStack would reject (blank key, nothing to write) are counted by reason.
    """
    trait_columns = [(index, name) for index, name in enumerate(columns) if name != key_column]
    key_index = columns.index(key_column)
    written, rejected = 0, {}
    pipeline = client.pipeline(transaction=False)
    for row in rows:
        try:
            key = user_key(row[key_index], prefix)
            fields = identify_fields(traits={name: row[index] for index, name in trait_columns})
        except IdentifyError as error:
            rejected[str(error)] = rejected.get(str(error), 0) + 1
            continue
        pipeline.hset(key, mapping=fields)
        written += 1
        if len(pipeline) >= BATCH_SIZE:
            pipeline.execute()
    pipeline.execute()
    return WriteResult(written=written, rejected=rejected)
