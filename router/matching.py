"""Which leads a scenario takes: rules on the source, the payload, the phone's country and region, and the time.

A scenario matches a lead when every rule it has holds; a rule holds when any one of its values
does. Values are exact text or globs (``vk-*``, ``spring-202?``), compared case-sensitively.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache, cached_property
from types import ModuleType
from typing import Any

import phonenumbers

from router.schedule import Schedule

_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True, slots=True)
class Patterns:
    """Values to compare text against: exact ones by set lookup, globs compiled once."""

    exact: frozenset[str]
    globs: tuple[re.Pattern[str], ...]
    written: tuple[str, ...]  # as ops wrote them, to describe the rule

    @classmethod
    def of(cls, values: Iterable[str], *, globs: bool = True) -> Patterns:
        """``globs=False`` keeps ``*`` and ``?`` literal (version 1 files compared sources exactly)."""
        written = tuple(values)
        wild = [value for value in written if globs and _GLOB.search(value)]
        return cls(
            exact=frozenset(value for value in written if value not in wild),
            globs=tuple(re.compile(fnmatch.translate(value)) for value in wild),
            written=written,
        )

    def matches(self, text: str) -> bool:
        return text in self.exact or any(glob.match(text) for glob in self.globs)

    def __str__(self) -> str:
        return " or ".join(self.written)


def _as_texts(value: Any) -> list[str]:
    """A payload value as the texts a rule compares: scalars as JSON writes them, lists item by item."""
    if isinstance(value, list):
        return [text for item in value for text in _as_texts(item)]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, str | int | float):
        return [str(value)]
    return []  # null or a nested object: nothing to compare


class LeadFacts:
    """What the rules read from a lead; the phone is looked up only if a rule asks, and once."""

    def __init__(self, source: str, payload: Mapping[str, Any], phone: str) -> None:
        self.source = source
        self.payload = payload
        self._phone = phone

    @cached_property
    def _number(self) -> phonenumbers.PhoneNumber | None:
        try:
            return phonenumbers.parse(self._phone)
        except phonenumbers.NumberParseException:
            return None

    @cached_property
    def country(self) -> str:
        """ISO 3166 code of the phone's country, e.g. ``RU``; empty if the number has none."""
        if self._number is None:
            return ""
        return phonenumbers.region_code_for_number(self._number) or ""

    @cached_property
    def region(self) -> str:
        """The area phonenumbers' geocoder names, in English (``Moscow``, ``San Francisco, CA``).

        For many mobile numbers it names only the country.
        """
        if self._number is None:
            return ""
        return str(region_geocoder().description_for_number(self._number, "en"))


@cache
def region_geocoder() -> ModuleType:
    """phonenumbers' geocoder, imported on first use: its data costs ~100 MB of memory and half a
    second to load, and only files with ``regions:`` rules need it (RoutingPlan.reads_regions)."""
    from phonenumbers import geocoder

    return geocoder


@dataclass(frozen=True, slots=True)
class Match:
    """The rules of one scenario; none at all takes every lead (the catch-all)."""

    sources: Patterns | None = None
    payload: tuple[tuple[str, Patterns], ...] = ()  # field name and the values it may have
    countries: frozenset[str] | None = None
    regions: Patterns | None = None
    when: Schedule | None = None  # in the company's zone

    @property
    def takes_everything(self) -> bool:
        return self == Match()

    def matches(self, lead: LeadFacts, local_now: datetime | None) -> bool:
        """``local_now`` None: at some hour, whatever ``when`` says."""
        # Cheapest first: the phone lookups run only for leads every other rule let through.
        if self.sources is not None and not self.sources.matches(lead.source):
            return False
        if self.when is not None and local_now is not None and not self.when.contains(local_now):
            return False
        for name, patterns in self.payload:
            if not any(patterns.matches(text) for text in _as_texts(lead.payload.get(name))):
                return False
        if self.countries is not None and lead.country not in self.countries:
            return False
        return self.regions is None or self.regions.matches(lead.region)

    def describe(self) -> str:
        if self.takes_everything:
            return "every lead the scenarios above did not take"
        rules = []
        if self.sources is not None:
            rules.append(f"source {self.sources}")
        rules += [f"payload.{name} {patterns}" for name, patterns in self.payload]
        if self.countries is not None:
            rules.append(f"country {' or '.join(sorted(self.countries))}")
        if self.regions is not None:
            rules.append(f"region {self.regions}")
        if self.when is not None:
            rules.append(f"at {self.when}")
        return "; ".join(rules)
