"""Phone numbers are data, never dialplan: normalise to E.164 and hand out digits only."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum

import phonenumbers
from phonenumbers import PhoneNumberType

MAX_RAW_LENGTH = 32
# What people type into a phone field: ASCII digits and + - ( ) . and spaces.
_TYPED = re.compile(r"[0-9+\-() .]+")


class InvalidPhone(ValueError):
    """The text is not a dialable phone number; the message says why."""


def normalize_phone(raw: str, default_region: str) -> str:
    """Return the number in E.164 (``+79161234567``) or raise InvalidPhone (see parse_phone)."""
    return parse_phone(raw, default_region).e164


def parse_phone(raw: str, default_region: str) -> Phone:
    """The number, in E.164 and parsed, or raise InvalidPhone.

    Only characters people really type into a phone field are accepted, so a
    value such as ``+7916&PJSIP/x`` or one with CR/LF is refused outright
    instead of being "cleaned" into something dialable.
    """
    if len(raw) > MAX_RAW_LENGTH:
        raise InvalidPhone(f"longer than {MAX_RAW_LENGTH} characters")
    stripped = raw.strip()
    if not stripped:
        raise InvalidPhone("empty")
    # ASCII digits only: fullwidth or Arabic-Indic digits would be folded to ASCII by
    # phonenumbers, so a look-alike string would dial; people's phone fields send ASCII.
    if not _TYPED.fullmatch(stripped):
        bad = sorted({ch for ch in stripped if not ((ch.isascii() and ch.isdigit()) or ch in "+-() .")})
        shown = ", ".join(repr(ch) for ch in bad)
        raise InvalidPhone(f"contains characters that are not part of a phone number: {shown}")
    if not any(ch.isdigit() for ch in stripped):
        raise InvalidPhone("has no digits")
    try:
        parsed = phonenumbers.parse(stripped, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"cannot be parsed: {exc._msg}") from None
    # phonenumbers.is_valid_number is "its type is known" for the number's own region: the type
    # is found once here, for both (tests/router/test_phone_fuzz.py pins the equivalence).
    kind = _kind(parsed)
    if kind is NumberType.UNKNOWN:
        raise InvalidPhone("is not a valid number for its country")
    region = phonenumbers.region_code_for_number(parsed) or "001"
    return Phone(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), region, kind)


def _kind(parsed: phonenumbers.PhoneNumber) -> NumberType:
    return _TYPES.get(phonenumbers.number_type(parsed), NumberType.UNKNOWN)


def dial_digits(e164: str) -> str:
    """The digits of an E.164 number, the only form that may reach a channel string."""
    digits = e164.removeprefix("+")
    if not (digits.isascii() and digits.isdigit()) or not 6 <= len(digits) <= 15:
        raise InvalidPhone(f"not an E.164 number: {e164!r}")
    return digits


class NumberType(StrEnum):
    """phonenumbers' number types, by the names ops write in the config."""

    FIXED_LINE = "fixed_line"
    MOBILE = "mobile"
    FIXED_LINE_OR_MOBILE = "fixed_line_or_mobile"  # where the plan cannot tell (US, CA...)
    TOLL_FREE = "toll_free"
    PREMIUM_RATE = "premium_rate"
    SHARED_COST = "shared_cost"
    VOIP = "voip"  # +882/+883 satellite and international networks are among these
    PERSONAL_NUMBER = "personal_number"
    PAGER = "pager"
    UAN = "uan"
    VOICEMAIL = "voicemail"
    UNKNOWN = "unknown"


_TYPES = {getattr(PhoneNumberType, kind.name): kind for kind in NumberType}


@dataclass(frozen=True)
class Phone:
    """A valid number: its E.164 text, its region and its type, found once by parse_phone: the
    policy reads them instead of parsing the text again (parsing is most of a number's cost)."""

    e164: str
    region: str  # "001" for a non-geographic number
    kind: NumberType


@dataclass(frozen=True)
class PhonePolicy:
    """Which numbers the daemon will dial: callback floods and toll fraud aim at other countries
    and at premium-rate, shared-cost and satellite numbers, which cost the company per minute."""

    default_region: str
    regions: frozenset[str] = frozenset()  # empty: the default region only
    types: frozenset[NumberType] = frozenset({NumberType.FIXED_LINE, NumberType.MOBILE})

    def refusal(self, number: str | Phone) -> str | None:
        """Why this number (E.164, or as parse_phone gave it) may not be dialled, or None."""
        if isinstance(number, str):
            parsed = phonenumbers.parse(number)
            region, kind = phonenumbers.region_code_for_number(parsed) or "001", _kind(parsed)
        else:
            region, kind = number.region, number.kind
        allowed = self.regions or {self.default_region}
        if region not in allowed:
            country = "a non-geographic number" if region == "001" else f"a number in {region}"
            return f"is {country}; allowed: {', '.join(sorted(allowed))}"
        either = {NumberType.FIXED_LINE, NumberType.MOBILE}
        if kind in self.types or (kind is NumberType.FIXED_LINE_OR_MOBILE and either & self.types):
            return None
        return f"is of type {kind.value}; allowed types: {', '.join(sorted(self.types))}"

    def with_lists(self, regions: frozenset[str] | None, types: frozenset[NumberType] | None) -> PhonePolicy:
        """This policy with a scenario's own lists in place of these, where the scenario has them."""
        return replace(
            self,
            regions=self.regions if regions is None else regions,
            types=self.types if types is None else types,
        )
