"""Key names: the purchase log shares the profile hash's Redis Cluster slot."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from personalization_pipeline.keys import (
    event_stream_keys,
    purchases_key,
    stream_shard,
    user_key,
)


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
