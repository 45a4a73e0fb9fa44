"""The caller name a manager's phone shows: made from the lead, safe for AMI and the dialplan."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from router.caller_name import MAX_LENGTH, caller_name, check_template, clean
from tests.router.plans import lead

TEMPLATE = "{name} · {source}"


def named(name: str, source: str = "yandex-direct") -> str:
    one = lead(source=source)
    one.name = name
    return caller_name(TEMPLATE, one)


def test_the_name_and_source_are_shown_cyrillic_kept() -> None:
    assert named("Ivan Petrov") == "Ivan Petrov · yandex-direct"
    assert named("Иван Петров") == "Иван Петров · yandex-direct"


def test_control_and_dialplan_special_characters_are_removed() -> None:
    assert named("Ivan\r\nAction: Originate") == "Ivan Action: Originate · yandex-direct"
    assert named("${SHELL(rm -rf /)},x&y|z;\"<q>'`^[a]=") == "SHELLrm -rf /xyzqa · yandex-direct"
    assert named("Ivan\tPetrov\u00a0\u2028 Jr") == "Ivan Petrov Jr · yandex-direct"


def test_it_is_cut_to_a_safe_length() -> None:
    shown = named("Я" * 100)
    assert len(shown) == MAX_LENGTH and set(shown) == {"Я"}


def test_an_empty_part_takes_its_separator_with_it() -> None:
    assert named("") == "yandex-direct"
    assert named("Ivan", source="") == "Ivan"


def test_templates_may_name_only_the_leads_fields() -> None:
    assert check_template("{name} ({phone})") is None
    assert check_template("{name} {payload}") == "names 'payload'; a template may name name, source, phone"
    assert check_template("{name") is not None
    # Each would fail or blow up at every call's render: refused when the config is read.
    for formatted in ("{name:d}", "{name!x}", "{name:>999999999}", "{phone!r}", "{name:{source}}"):
        problem = check_template(formatted)
        assert problem is not None and problem.startswith("formats "), formatted


@given(st.text())
def test_nothing_unsafe_ever_comes_out(text: str) -> None:
    shown = clean(text)
    assert len(shown) <= MAX_LENGTH
    assert not any(char in shown for char in ",$\\{}[]()\"<>|;&'`^=\r\n\x00")
    assert all(char.isprintable() for char in shown)
