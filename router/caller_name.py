"""The name a manager's phone shows for the client: made from the lead by the scenario's template.

The lead's name and source are whatever a web form sent. On their way to the PBX (an Originate
``Variable`` read by ``Set(CALLERID(name)=...)``, or an Originate ``CallerID``) they must not
become dialplan or AMI: control characters (CR/LF would end an AMI header), the characters AMI
or the dialplan give a meaning to (``,`` splits an Originate's variables; ``$ { } [ ] ( )`` are
dialplan expressions; ``" < >`` end a caller ID's name; ``\\ | ; & ' ` ^``) are dropped, runs of
spaces become one, and the result is cut to ``MAX_LENGTH`` characters, Cyrillic and every other
letter kept. SIP phones show about 20-30 characters; a display name well under the 80 bytes
many PBX buffers and phones keep leaves room for two-byte letters.
"""

from __future__ import annotations

import string
import unicodedata

from router.model import Lead

MAX_LENGTH = 40  # characters; Cyrillic takes 2 bytes each in UTF-8: at most 80 bytes
FIELDS = ("name", "source", "phone")  # what a template may name
_SPECIAL = frozenset(",$\\{}[]()\"<>|;&'`^=")


def check_template(template: str) -> str | None:
    """Why this template cannot be used, or None."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)]
    except ValueError as exc:
        return f"is not a template: {exc}"
    names = {name for name, _, _ in fields if name is not None}
    # A format spec or conversion may fail to render ({name:d}) or render a huge width
    # ({name:>999999999}) for every call of the scenario: plain names only.
    formatted = sorted({name for name, spec, conversion in fields if name is not None and (spec or conversion)})
    if formatted:
        shown = ", ".join(repr(name) for name in formatted)
        return f"formats {shown} (':' or '!'); a template names its fields plainly, e.g. {{name}}"
    unknown = sorted(names - set(FIELDS))
    if unknown:
        return f"names {', '.join(repr(name) for name in unknown)}; a template may name {', '.join(FIELDS)}"
    return None


def clean(text: str, max_length: int = MAX_LENGTH) -> str:
    """Text safe for a caller ID name: no control or special characters, one space at a time, cut."""
    kept = []
    for char in text:
        if char.isspace():  # CR, LF, TAB, NBSP, line separators...: a space
            kept.append(" ")
        elif not unicodedata.category(char).startswith("C") and char not in _SPECIAL:
            kept.append(char)
    return " ".join("".join(kept).split())[:max_length].rstrip()


def caller_name(template: str, lead: Lead) -> str:
    """The lead's caller name by ``template`` (checked by ``check_template``). A part the lead
    leaves empty takes no separator with it at either end: a lead without a name shows its source."""
    rendered = template.format(name=clean(lead.name), source=clean(lead.source), phone=lead.phone)
    return clean(rendered).strip(_SEPARATORS)


_SEPARATORS = " ·-–—:/"
