"""Value types shared by the settings and the routing file, each refusing with a reason ops understand."""

from __future__ import annotations

import re
import string
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

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
