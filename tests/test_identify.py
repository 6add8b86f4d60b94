"""The identify encoding against every table of reference/rudderstack.md §1, plus properties."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from personalization_pipeline.sync.identify import (
    IdentifyError,
    encode_identify,
    identify_fields,
    js_json,
    js_string,
    parse_json,
    user_key,
)


def test_parse_json_keeps_negative_zero_and_rejects_non_json_numbers():
    assert math.copysign(1, parse_json("-0")) == -1
    assert parse_json("[1, -5]") == [1, -5]
    with pytest.raises(ValueError):
        parse_json("NaN")


# §1.2 userId rules.
@pytest.mark.parametrize(
    ("user_id", "key"),
    [
        ("u1", "user:u1"),
        (0, "user:0"),
        (False, "user:false"),
        (" u1 ", "user: u1 "),
        (123, "user:123"),
        (1.0, "user:1"),
        (12345678901234567890, "user:12345678901234567000"),
        (True, "user:true"),
    ],
)
def test_user_id_rules(user_id, key):
    assert user_key(user_id) == key


@pytest.mark.parametrize("user_id", [None, "", "   ", "\t\n", "\ufeff", "\u3000"])
def test_blank_user_id_is_an_error(user_id):
    with pytest.raises(IdentifyError, match=r"^Blank userId passed in identify event$"):
        user_key(user_id)


def test_user_id_only_trims_javascript_whitespace():
    # JS trim keeps U+0085 and U+001C, which Python's str.strip() would remove.
    assert user_key("\x85") == "user:\x85"
    assert user_key("\x1c") == "user:\x1c"


def test_user_id_never_falls_back_to_anonymous_id():
    event = {"type": "identify", "anonymousId": "a1", "traits": {"email": "a@b.c"}}
    with pytest.raises(IdentifyError, match="Blank userId"):
        encode_identify(event)


# §1.3 key format and prefix.
@pytest.mark.parametrize(
    ("prefix", "key"),
    [
        ("", "user:u1"),
        (" ", "user:u1"),
        (None, "user:u1"),
        ("myapp", "myapp:user:u1"),
        (" myapp ", "myapp:user:u1"),
        ("myapp:", "myapp::user:u1"),
        ("a b", "a b:user:u1"),
    ],
)
def test_prefix_rules(prefix, key):
    assert user_key("u1", prefix) == key


# §1.6 value-rendering table: trait JSON as sent over HTTP → stored hash value.
@pytest.mark.parametrize(
    ("trait_json", "stored"),
    [
        ('"x"', "x"),
        ('" x "', " x "),
        ('""', ""),
        ("true", "true"),
        ("false", "false"),
        ("5", "5"),
        ("1.0", "1"),
        ("0.1", "0.1"),
        ("1e16", "10000000000000000"),
        ("1e21", "1e+21"),
        ("0.000001", "0.000001"),
        ("1e-7", "1e-7"),
        ("12345678901234567890", "12345678901234567000"),
        ("-0", "-0"),
        ("-0.0", "-0"),
        ("[]", "[]"),
        (
            '[1.0,"a\\"b",null,{"2":"x","b":1,"1":"y"},1e21,-0]',
            '[1,"a\\"b",null,{"1":"y","2":"x","b":1},1e+21,0]',
        ),
        ("123.456", "123.456"),
        ("1.5e-7", "1.5e-7"),
        ("1.2345e25", "1.2345e+25"),
        ("-1e-7", "-1e-7"),
        ("100", "100"),
        ("1e20", "100000000000000000000"),
        ("0.1e-5", "0.000001"),
        ("[[],{}]", "[[],{}]"),
    ],
)
def test_value_rendering_table(trait_json, stored):
    traits = parse_json('{"v":' + trait_json + "}")
    assert identify_fields(traits) == {"v": stored}


@pytest.mark.parametrize("trait_json", ["null", "{}"])
def test_null_and_empty_object_are_not_written(trait_json):
    traits = parse_json('{"keep":"k","v":' + trait_json + "}")
    assert identify_fields(traits) == {"keep": "k"}


def test_nested_objects_flatten_and_arrays_stay_whole():
    assert identify_fields({"plan": {"tier": "gold", "seats": 5}}) == {
        "plan.tier": "gold",
        "plan.seats": "5",
    }
    assert identify_fields({"a": {"b": {"c": [1, 2]}}}) == {"a.b.c": "[1,2]"}


def test_top_level_traits_win_per_flattened_field():
    assert identify_fields({"dup.k": 2}, {"dup": {"k": 1}}) == {"dup.k": "2"}


def test_flatten_collisions_follow_javascript_key_order():
    # Both keys are non-index keys: insertion order, the later one wins.
    assert identify_fields({"a.b": 1, "a": {"b": 2}}) == {"a.b": "2"}
    assert identify_fields({"a": {"b": 2}, "a.b": 1}) == {"a.b": "1"}
    # "1" is an array index, so JS visits it before "1.x" whatever the insertion order.
    assert identify_fields({"1.x": "late", "1": {"x": "early"}}) == {"1.x": "late"}


def test_json_string_escapes():
    text = '"\\\b\f\n\r\t\x00\x1f\x7f/é\u2028\u2029😀'
    assert js_json([text]) == ('["\\"\\\\\\b\\f\\n\\r\\t\\u0000\\u001f\x7f/é\u2028\u2029😀"]')
    assert js_json(["\ud800", "x\udfffy"]) == '["\\ud800","x\\udfffy"]'
    assert js_json(["\ud83d\ude00"]) == '["😀"]'


def test_json_array_index_keys_come_first():
    value = {"b": 1, "4294967295": 2, "01": 3, "10": 4, "2": 5, "-1": 6, "4294967294": 7}
    assert js_json([value]) == (
        '[{"2":5,"10":4,"4294967294":7,"b":1,"4294967295":2,"01":3,"-1":6}]'
    )


def test_json_non_finite_numbers_are_null():
    assert js_json([math.nan, math.inf, -math.inf]) == "[null,null,null]"


def test_decimal_renders_as_the_double_it_would_be_sent_as():
    assert js_string(Decimal("1234.50")) == "1234.5"
    assert js_string(Decimal("1E+21")) == "1e+21"


def test_nothing_to_write_is_an_error():
    for traits, context_traits in [
        (None, None),
        ({}, None),
        ({"a": None}, {"b": {}}),
        ({"a": {"b": None}}, None),
    ]:
        with pytest.raises(IdentifyError, match=r"^context or context.traits or traits is empty$"):
            identify_fields(traits, context_traits)


def test_a_top_level_null_hides_the_context_value():
    # lodash assign copies the null over the context value; the null is then skipped.
    assert identify_fields({"email": None, "x": 1}, {"email": "a@b.c"}) == {"x": "1"}


@pytest.mark.parametrize("event_type", ["track", "page", None, 1])
def test_only_identify_is_supported(event_type):
    with pytest.raises(IdentifyError, match=r"^Only Identify calls are supported$"):
        encode_identify({"type": event_type, "userId": "u1", "traits": {"a": 1}})


def test_type_check_is_case_insensitive():
    assert encode_identify({"type": "IdEnTiFy", "userId": "u1", "traits": {"a": 1}}) == (
        "user:u1",
        {"a": "1"},
    )


# §1.9 worked examples.
def test_example_a_rudder_sdk_python():
    event = {
        "type": "identify",
        "userId": "u1",
        "context": {
            "traits": {
                "email": "a@b.c",
                "plan": {"tier": "gold", "seats": 5},
                "tags": ["x", "y"],
                "score": 1.0,
                "vip": True,
                "nick": None,
                "ratio": 0.1,
                "big": 1e16,
                "tiny": 1e-7,
            },
            "library": {"name": "analytics-python", "version": "2.1.9"},
        },
    }
    assert encode_identify(event) == (
        "user:u1",
        {
            "email": "a@b.c",
            "plan.tier": "gold",
            "plan.seats": "5",
            "tags": '["x","y"]',
            "score": "1",
            "vip": "true",
            "ratio": "0.1",
            "big": "10000000000000000",
            "tiny": "1e-7",
        },
    )


def test_example_b_reverse_etl_row_with_prefix():
    event = parse_json(
        '{"type":"identify","userId":42,"channel":"sources",'
        '"context":{"sources":{"job_id":"j1","task_run_id":"t1"},'
        '"traits":{"email":"old@x.io","plan":"basic"}},'
        '"traits":{"email":"a@b.c","income_bracket":null,"membership_status":"gold",'
        '"ltv":1234.50,"recent":[{"b":1,"2":"x"}]}}'
    )
    assert encode_identify(event, " app ") == (
        "app:user:42",
        {
            "email": "a@b.c",
            "plan": "basic",
            "membership_status": "gold",
            "ltv": "1234.5",
            "recent": '[{"2":"x","b":1}]',
        },
    )


def test_example_c_transformer_fixture_test_0():
    traits = {
        "arrayProp": [{"x": 1, "y": 2}],
        "nestedProp": {
            "innerProp1": "innerPropVal1",
            "innerProp2": "innerPropVal2",
            "innerProp3": {},
        },
        "key with spaces": "v1",
        "key$dollar": "v2",
        "key&amp": "v3",
        "Cízǔ": "v4",
    }
    assert identify_fields(context_traits=traits) == {
        "arrayProp": '[{"x":1,"y":2}]',
        "nestedProp.innerProp1": "innerPropVal1",
        "nestedProp.innerProp2": "innerPropVal2",
        "key with spaces": "v1",
        "key$dollar": "v2",
        "key&amp": "v3",
        "Cízǔ": "v4",
    }


# Properties.
def independent_js_number(x: float) -> str:
    """§1.8 formulated from Decimal(repr(x)), independently of the module's string surgery."""
    if x == 0:
        return "-0" if math.copysign(1, x) < 0 else "0"
    sign = "-" if x < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(x))).as_tuple()
    digits = "".join(map(str, digit_tuple)).lstrip("0")
    while digits.endswith("0"):
        digits = digits[:-1]
        exponent += 1
    k = len(digits)
    n = k + exponent
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
    return sign + f"{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"


finite_floats = st.floats(allow_nan=False, allow_infinity=False)


@given(finite_floats)
def test_js_string_of_a_float_round_trips(x):
    assert float(js_string(x)) == x
    assert math.copysign(1, float(js_string(x))) == math.copysign(1, x)


@given(finite_floats)
def test_js_number_layout_matches_an_independent_formulation(x):
    assert js_string(x) == independent_js_number(x)


@given(st.integers(min_value=-(2**80), max_value=2**80))
def test_integers_render_as_the_double_javascript_parses(i):
    assert js_string(i) == independent_js_number(float(i))


json_leaves = st.none() | st.booleans() | finite_floats | st.integers(-(2**53), 2**53) | st.text()
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


def normalised(value):
    """The doubles JS would hold: -0 becomes 0, every number a float."""
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return float(value) + 0.0


def no_surrogates(value) -> bool:
    if isinstance(value, str):
        return not any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return all(no_surrogates(k) and no_surrogates(v) for k, v in value.items())
    if isinstance(value, list):
        return all(no_surrogates(v) for v in value)
    return True


@given(st.lists(json_values, max_size=5))
def test_js_json_parses_back_to_an_equal_value(value):
    text = js_json(value)
    if no_surrogates(value):
        assert json.loads(text, parse_int=float) == normalised(value)
        assert text.encode("utf-8")


def leaves(value, path=""):
    """Every (path, leaf) the flattening must keep, in JS visiting order."""
    if isinstance(value, dict) and value:
        for key in value:
            yield from leaves(value[key], f"{path}.{key}" if path else key)
    else:
        yield path, value


identifier = st.text(alphabet="abcxyz", min_size=1, max_size=3)
nested_traits = st.recursive(
    json_leaves | st.lists(json_leaves, max_size=3),
    lambda children: st.dictionaries(identifier, children, max_size=4),
    max_leaves=15,
).filter(lambda v: isinstance(v, dict))


@given(nested_traits)
def test_flattening_never_loses_a_non_null_non_empty_leaf(traits):
    expected = {path: value for path, value in leaves(traits) if value is not None and value != {}}
    if not expected:
        with pytest.raises(IdentifyError):
            identify_fields(traits)
        return
    fields = identify_fields(traits)
    assert set(fields) == set(expected)
    for path, value in expected.items():
        want = js_json(value) if isinstance(value, list) else js_string(value)
        assert fields[path] == want


@pytest.mark.parametrize(
    ("traits", "context_traits"),
    [
        ({"__proto__": {"admin": True}}, None),
        (None, {"plan": {"tier": "gold", "__proto__": "x"}}),
        ({"purchases": [{"sku": "A"}, {"__proto__": {}}]}, {"name": "Ann"}),
    ],
    ids=["traits", "nested-in-context-traits", "inside-an-array"],
)
def test_a_proto_key_at_any_depth_is_rejected_as_rudderstack_rejects_it(traits, context_traits):
    event = {"type": "identify", "userId": "u1", "traits": traits}
    event["context"] = {"traits": context_traits}
    with pytest.raises(IdentifyError, match=r"^Object contains forbidden prototype property$"):
        encode_identify(event)


def test_proto_as_a_value_or_elsewhere_in_the_event_is_fine():
    event = {
        "type": "identify",
        "userId": "u1",
        "traits": {"note": "__proto__", "tags": ["__proto__"]},
        "properties": {"__proto__": 1},  # outside traits and context.traits
    }
    assert encode_identify(event) == (
        "user:u1",
        {"note": "__proto__", "tags": '["__proto__"]'},
    )
