"""Phone numbers are data, never dialplan: normalise to E.164 and hand out digits only."""

from __future__ import annotations

import phonenumbers

MAX_RAW_LENGTH = 32


class InvalidPhone(ValueError):
    """The text is not a dialable phone number; the message says why."""


def normalize_phone(raw: str, default_region: str) -> str:
    """Return the number in E.164 (``+79161234567``) or raise InvalidPhone.

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
    bad = sorted({ch for ch in stripped if not ((ch.isascii() and ch.isdigit()) or ch in "+-() .")})
    if bad:
        shown = ", ".join(repr(ch) for ch in bad)
        raise InvalidPhone(f"contains characters that are not part of a phone number: {shown}")
    if not any(ch.isdigit() for ch in stripped):
        raise InvalidPhone("has no digits")
    try:
        parsed = phonenumbers.parse(stripped, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"cannot be parsed: {exc._msg}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhone("is not a valid number for its country")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def dial_digits(e164: str) -> str:
    """The digits of an E.164 number, the only form that may reach a channel string."""
    digits = e164.removeprefix("+")
    if not (digits.isascii() and digits.isdigit()) or not 6 <= len(digits) <= 15:
        raise InvalidPhone(f"not an E.164 number: {e164!r}")
    return digits
