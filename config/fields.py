"""Value types shared by the settings and the routing file, each refusing with a reason ops understand."""

from __future__ import annotations

import re
import string
from typing import Annotated, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import AfterValidator, BeforeValidator, Field, PlainValidator

from router.schedule import DAY_NAMES, MINUTES_PER_DAY, Window

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smh]?)")
_SECONDS_PER_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600}

# What may reach an AMI action or a channel string: no CR/LF (new AMI header),
# no `,`/`&`/`;` (dialplan argument and channel separators), no `$`/`{}` (expressions).
AMI_SAFE = string.ascii_letters + string.digits + "/@._-"


def _seconds(value: object) -> object:
    if not isinstance(value, str):
        return value
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a duration: write seconds or a number with s, m or h, e.g. 45s, 5m, 1h")
    seconds = float(match[1]) * _SECONDS_PER_UNIT[match[2]]
    return int(seconds) if seconds.is_integer() else seconds


def _shown(characters: set[str]) -> str:
    return " ".join(repr(character) for character in sorted(characters))


def only(allowed: str, described: str) -> AfterValidator:
    """Refuse empty text and text with characters outside ``allowed``."""

    def check(value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        unexpected = set(value) - set(allowed)
        if unexpected:
            raise ValueError(f"may contain only {described} (found {_shown(unexpected)})")
        return value

    return AfterValidator(check)


def template(placeholder: str, example: str) -> AfterValidator:
    """A template with ``{placeholder}`` exactly once and AMI-safe text around it."""
    marker = "{" + placeholder + "}"

    def check(value: str) -> str:
        if value.count(marker) != 1:
            raise ValueError(f"must contain {marker} exactly once, e.g. {example}")
        unexpected = set(value.replace(marker, "")) - set(AMI_SAFE)
        if unexpected:
            raise ValueError(
                f"may contain only letters, digits and / @ . _ - besides {marker} (found {_shown(unexpected)})"
            )
        return value

    return AfterValidator(check)


def _number_as_text(value: object) -> object:
    # YAML reads `extension: 101` as a number; the PBX needs the text.
    return str(value) if type(value) is int else value


def _one_line(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if not value.isprintable():
        raise ValueError("must be text on one line, without control characters")
    return value


Duration = Annotated[float, BeforeValidator(_seconds), Field(strict=True, gt=0, allow_inf_nan=False)]
"""Seconds: a number, or text such as "45s", "5m", "1h"."""


def _off_or_seconds(value: object) -> object:
    return 0 if value is False or (isinstance(value, str) and value.strip().lower() == "off") else _seconds(value)


DurationOrOff = Annotated[float, BeforeValidator(_off_or_seconds), Field(strict=True, ge=0, allow_inf_nan=False)]
"""A Duration, or ``off`` (0): the feature it times is turned off."""

WholeSeconds = Annotated[int, BeforeValidator(_seconds), Field(strict=True, ge=1)]
"""A Duration that must come out as a whole number of seconds (the dialplan takes integers)."""

Count = Annotated[int, Field(strict=True, ge=1)]
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]
ListenPort = Annotated[int, Field(strict=True, ge=0, le=65535)]
"""A port to listen on; 0 lets the OS pick a free one (tests, the demo)."""
Host = Annotated[str, only(string.ascii_letters + string.digits + ".-:", "letters, digits and . - :")]
AmiText = Annotated[str, only(AMI_SAFE, "letters, digits and / @ . _ -")]
Identifier = Annotated[str, only(string.ascii_lowercase + string.digits + "_.-", "lowercase letters, digits and _ . -")]
Digits = Annotated[str, BeforeValidator(_number_as_text), only(string.digits, "digits")]
Line = Annotated[str, AfterValidator(_one_line)]


def _one_or_many(value: object) -> object:
    # `sources: vk-ads` reads as well as `sources: [vk-ads]`.
    return [value] if isinstance(value, str | int | float) and not isinstance(value, bool) else value


def _text(value: object) -> object:
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


ItemT = TypeVar("ItemT")
OneOrMore = Annotated[list[ItemT], BeforeValidator(_one_or_many), Field(min_length=1)]
"""A non-empty list, or a single value standing for a list of one."""

Pattern = Annotated[str, BeforeValidator(_text), AfterValidator(_one_line)]
"""Text to compare with, exact or a glob (``*``, ``?``, ``[abc]``); numbers are read as their text."""

_HOURS = re.compile(r"([0-9]{1,2}):([0-9]{2})-([0-9]{1,2}):([0-9]{2})")
_WINDOW_EXAMPLES = "e.g. 'mon-fri 09:00-18:00', 'sat,sun 10:00-14:00', '09:00-18:00', 'sat' or 'fri 22:00-02:00'"


def _days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for item in text.split(","):
        first, _, last = item.partition("-")
        if first not in DAY_NAMES or (last and last not in DAY_NAMES):
            raise ValueError(f"{item!r} is not a day or a range of days: use {', '.join(DAY_NAMES)}, e.g. mon-fri")
        start, end = DAY_NAMES.index(first), DAY_NAMES.index(last or first)
        days.update((start + offset) % 7 for offset in range((end - start) % 7 + 1))
    return frozenset(days)


def _minute(hours: str, minutes: str, *, end: bool) -> int:
    minute = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or minute > MINUTES_PER_DAY or (minute == MINUTES_PER_DAY and not end):
        raise ValueError(f"{hours}:{minutes} is not a time of day (00:00 to 23:59, or 24:00 for an end)")
    return minute


def parse_window(value: object) -> Window:
    """``mon-fri 09:00-18:00``: days, hours or both; hours ending at or before they start run past midnight."""
    if not isinstance(value, str):
        raise ValueError(f"must be days and hours as text, {_WINDOW_EXAMPLES}")
    parts = value.lower().split()
    hours = _HOURS.fullmatch(parts[-1]) if parts else None
    if hours is not None:
        parts.pop()
    if len(parts) > 1 or (not parts and hours is None):
        raise ValueError(f"{value!r} is not a time window: write days, hours or both, {_WINDOW_EXAMPLES}")
    days = _days(parts[0]) if parts else frozenset(range(7))
    if hours is None:
        return Window(days, 0, MINUTES_PER_DAY)
    start, end = _minute(hours[1], hours[2], end=False), _minute(hours[3], hours[4], end=True)
    if start == end:
        raise ValueError(f"{value!r} starts and ends at the same time; for the whole day leave the hours out")
    return Window(days, start, end)


TimeWindow = Annotated[Window, PlainValidator(parse_window)]


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not a time zone: write an IANA name such as Europe/Moscow or UTC") from None
    return value


TimeZoneName = Annotated[str, AfterValidator(_zone)]


def _country(value: str) -> str:
    code = value.upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{value!r} is not a country code: write ISO 3166 codes such as RU, KZ, US")
    return code


Country = Annotated[str, AfterValidator(_country)]


def _share(value: object) -> object:
    share: object = value
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            share = float(value.strip()[:-1]) / 100
        except ValueError:
            pass
    if not isinstance(share, int | float) or isinstance(share, bool) or not 0 <= share <= 1:
        raise ValueError(f"{value!r} is not a share: write a percentage from 0% to 100% or a fraction such as 0.5")
    return share


Share = Annotated[float, BeforeValidator(_share)]
"""A part of a whole: ``50%`` or ``0.5``."""
