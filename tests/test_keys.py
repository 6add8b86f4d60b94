"""Key names: the purchase log shares the profile hash's Redis Cluster slot; a sync's keys are
built alike in Python (its spec) and SQL (the engine), and the profile spec's equal user_key."""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from personalization_pipeline.keys import (
    event_stream_keys,
    purchases_key,
    stream_shard,
    user_key,
)
from personalization_pipeline.sync.engine import SyncSpec, render_rows
from personalization_pipeline.sync.identify import IdentifyError


@pytest.mark.parametrize("user_id", ["U000001", "a{b}c", "a{b", "42", "Cízǔ", "a}b{c}"])
@pytest.mark.parametrize("prefix", ["", "app"])
def test_purchase_log_shares_the_profile_slot(user_id: str, prefix: str) -> None:
    profile = user_key(user_id, prefix)
    assert key_slot(purchases_key(profile).encode()) == key_slot(profile.encode())


def test_purchase_log_of_a_plain_key_is_tagged() -> None:
    assert purchases_key("app:user:U1") == "{app:user:U1}:purchases"
    # No tag, but a "}": no name can share the slot; the suffix is the honest fallback.
    assert purchases_key("user:{}x") == "user:{}x:purchases"


def test_event_streams_are_prefixed_and_a_user_keeps_one_shard() -> None:
    assert event_stream_keys(3, " app ") == ["app:events:0", "app:events:1", "app:events:2"]
    assert stream_shard("U1", 8) == stream_shard("U1", 8)
    assert len({stream_shard(f"U{i}", 8) for i in range(100)}) == 8


KEY_VALUES = st.one_of(
    st.text(max_size=12), st.integers(), st.floats(allow_nan=False, allow_infinity=False)
)


@given(value=KEY_VALUES, prefix=st.sampled_from(["", "app", " app "]))
def test_a_profile_spec_builds_the_key_user_key_builds(value: object, prefix: str) -> None:
    """The profile sync's key and the gateway's key for one user are one key, or both refused."""
    spec = SyncSpec(name="profiles", source="t", key_column="user_id", fields=["email"])
    try:
        expected = user_key(value, prefix)
    except IdentifyError:
        with pytest.raises(IdentifyError):
            spec.key(value, prefix)
        return
    assert spec.key(value, prefix) == expected


@pytest.mark.parametrize("template", ["user:{key}", "churn:{key}:score", "{key}"])
def test_the_sql_path_builds_the_keys_the_spec_builds(template: str) -> None:
    values = ["U1", " U2 ", "Cízǔ", "a{b}c", "", "  ", None]
    spec = SyncSpec(name="t", source="src", key_column="id", fields=["v"], key_template=template)
    with duckdb.connect() as con:
        con.execute("CREATE TABLE src (id VARCHAR, v VARCHAR)")
        con.executemany("INSERT INTO src VALUES (?, 'x')", [[value] for value in values])
        rendered = [key for key, _ in render_rows(con, spec, "app")]
    expected = []
    for value in values:
        try:
            expected.append(spec.key(value, "app"))
        except IdentifyError:
            expected.append(None)
    assert rendered == expected


def test_numeric_key_columns_build_the_same_keys_in_sql_and_python() -> None:
    spec = SyncSpec(name="t", source="src", key_column="id", fields=["v"], key_template="n:{key}")
    with duckdb.connect() as con:
        con.execute("CREATE TABLE src AS SELECT * FROM (VALUES (1, 'x'), (2.5, 'y')) t(id, v)")
        rows = con.execute("SELECT id FROM src").fetchall()
        rendered = [key for key, _ in render_rows(con, spec)]
    assert rendered == [spec.key(value) for (value,) in rows]
