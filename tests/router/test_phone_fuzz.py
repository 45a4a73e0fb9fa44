"""Whatever text arrives as a phone, what leaves normalisation is E.164 with ASCII digits, or a refusal."""

from __future__ import annotations

import json

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberType

from dialer.intake import MAX_PAYLOAD_DEPTH, InvalidPayload, check_payload
from router.phone import InvalidPhone, NumberType, PhonePolicy, dial_digits, normalize_phone, parse_phone

# What people type, what attackers type, and what Unicode offers as look-alike digits.
PHONE_ALPHABET = st.sampled_from(
    list("0123456789+-() .") + list("&,|;@/\r\n\0$[]{}") + ["１", "٠", "٣", "۹", "߁", "x", "П"]
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(PHONE_ALPHABET, max_size=40), st.text(max_size=40)))
def test_normalisation_yields_ascii_e164_or_refuses(raw: str) -> None:
    try:
        phone = normalize_phone(raw, "RU")
    except InvalidPhone as refusal:
        assert str(refusal)
        return
    assert phone.startswith("+") and phone[1:].isascii() and phone[1:].isdigit()
    assert dial_digits(phone) == phone[1:]


@pytest.mark.parametrize("raw", ["+７９１６１２３４５６７", "+٧٩١٦١٢٣٤٥٦٧", "+7916123456７", "+7 916 ۱۲۳ 45 67"])
def test_look_alike_digits_are_refused_not_folded(raw: str) -> None:
    with pytest.raises(InvalidPhone, match="not part of a phone number"):
        normalize_phone(raw, "RU")


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=20,
)


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    return 0


def _has_json_form(value: object) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


def _storable_text(value: object) -> bool:
    """Every string in it, key or value, is UTF-8 without a NUL (PostgreSQL's jsonb takes none)."""
    if isinstance(value, str):
        return "\x00" not in value and value.encode(errors="replace").decode() == value
    if isinstance(value, dict):
        return all(_storable_text(key) and _storable_text(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_storable_text(item) for item in value)
    return True


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=4))
def test_a_payload_passes_only_if_it_has_a_json_form_and_storable_text(payload: dict[str, object]) -> None:
    expected_ok = _has_json_form(payload) and _depth(payload) <= MAX_PAYLOAD_DEPTH and _storable_text(payload)
    try:
        check_payload(payload)
    except InvalidPayload:
        assert not expected_ok
    else:
        assert expected_ok


def test_depth_is_counted_from_the_payload_itself() -> None:
    nested: dict[str, object] = {}
    for _ in range(MAX_PAYLOAD_DEPTH - 1):
        nested = {"x": nested}
    check_payload(nested)
    with pytest.raises(InvalidPayload, match="nested deeper"):
        check_payload({"x": nested})


# Digits of many countries' plans, some valid, most not: "+" and a country code, or national.
NUMBERS = st.builds(
    lambda plus, country, rest: f"{plus}{country}{rest}",
    st.sampled_from(["+", ""]),
    st.sampled_from(["7", "1", "44", "49", "33", "380", "375", "86", "882", "883", "800", "979", "8", "0"]),
    st.text(st.sampled_from("0123456789"), min_size=4, max_size=12),
)


@settings(max_examples=1000, deadline=None)
@given(NUMBERS, st.sampled_from(["RU", "US", "GB", "DE", "KZ"]))
def test_a_number_is_valid_exactly_when_phonenumbers_says_so_with_its_region_and_type(raw: str, region: str) -> None:
    # parse_phone finds the type once and takes "type known" for phonenumbers.is_valid_number.
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        with pytest.raises(InvalidPhone):
            parse_phone(raw, region)
        return
    if not phonenumbers.is_valid_number(parsed):
        with pytest.raises(InvalidPhone, match="not a valid number"):
            parse_phone(raw, region)
        return
    phone = parse_phone(raw, region)
    assert phone.region == (phonenumbers.region_code_for_number(parsed) or "001")
    assert phone.kind.name == PhoneNumberType.to_string(phonenumbers.number_type(parsed))
    # The policy reads the same facts from a Phone as from its E.164 text.
    policy = PhonePolicy(region, types=frozenset(NumberType))
    assert policy.refusal(phone) == policy.refusal(phone.e164)
