from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from config.document import Document, _FastLoader, _Irregular, _Loader, _plain
from config.problems import ConfigError, Problem


def read_problems(path: Path, content: str | bytes) -> list[str]:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        Document.read(path)
    return [str(problem).removeprefix(f"{path}:") for problem in caught.value.problems]


def test_problem_and_error_text() -> None:
    located = Problem("routing.yaml", 12, 7, "scenarios[0].hold_limit", "must be greater than 0")
    unplaced = Problem("<demo>", 0, 0, "ami.port", "must be a valid integer")
    whole_file = Problem("routing.yaml", 0, 0, "", "cannot read the file: No such file or directory")

    assert str(located) == "routing.yaml:12:7: scenarios[0].hold_limit: must be greater than 0"
    assert str(unplaced) == "<demo>: ami.port: must be a valid integer"
    assert str(ConfigError([located, whole_file])) == (
        "routing.yaml:12:7: scenarios[0].hold_limit: must be greater than 0\n"
        "routing.yaml: cannot read the file: No such file or directory"
    )


def test_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    assert read_problems(tmp_path / "x.yaml", "a: [1, 2\nb: 3\n") == [
        "2:2: while parsing a flow sequence (line 1, column 4), expected ',' or ']', but got ':'"
    ]


def test_tab_indentation_is_a_syntax_error(tmp_path: Path) -> None:
    assert read_problems(tmp_path / "x.yaml", "a:\n\tb: 1\n") == [
        "2:1: while scanning for the next token, found character '\\t' that cannot start any token"
    ]


def test_one_document_only(tmp_path: Path) -> None:
    assert read_problems(tmp_path / "x.yaml", "a: 1\n---\nb: 2\n") == [
        "2:1: expected a single document in the stream (line 1, column 1), but found another document"
    ]


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: int


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int
    inner: Inner
    items: list[Inner] = []


def validation_problems(path: Path, content: str) -> list[str]:
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        Document.read(path).validate(Outer)
    return [str(problem).removeprefix(f"{path}:") for problem in caught.value.problems]


def test_duplicate_keys_are_reported_not_silently_merged(tmp_path: Path) -> None:
    assert validation_problems(tmp_path / "x.yaml", "count: 1\ninner:\n  value: 1\n  value: 2\n") == [
        "4:3: inner.value: duplicate key: line 3 sets it too and this one would win"
    ]


def test_problems_come_in_file_order_with_paths_into_lists(tmp_path: Path) -> None:
    content = "items:\n  - value: 1\n  - {value: x}\n  - 7\ninner: {}\nzz: 1\n"
    assert validation_problems(tmp_path / "x.yaml", content) == [
        "1:1: count: required key is missing",
        "3:13: items[1].value: must be a valid integer, unable to parse string as an integer",
        "4:5: items[2]: must be a mapping of `key: value` lines",
        "5:8: inner.value: required key is missing",
        "6:1: zz: unknown key; allowed here: count, inner, items",
    ]


def test_whole_document_of_the_wrong_shape(tmp_path: Path) -> None:
    assert validation_problems(tmp_path / "x.yaml", "- a\n- b\n") == ["1:1: must be a mapping of `key: value` lines"]
    assert validation_problems(tmp_path / "x.yaml", "") == [
        "1:1: count: required key is missing",
        "1:1: inner: required key is missing",
    ]


def test_values_merged_from_an_anchor_point_at_the_mapping(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("count: 1\ninner:\n  <<: {value: x}\n")
    with pytest.raises(ConfigError) as caught:
        Document.read(path).validate(Outer)
    assert [str(problem).removeprefix(f"{path}:") for problem in caught.value.problems] == [
        "3:3: inner.value: must be a valid integer, unable to parse string as an integer"
    ]


def test_undecodable_and_control_characters(tmp_path: Path) -> None:
    assert read_problems(tmp_path / "x.yaml", b"a: 1\nb: \xff\n") == ["2:4: is not UTF-8 text (byte 0xff)"]
    assert read_problems(tmp_path / "x.yaml", "a: 1\nb: x\x07\n") == [
        "2:5: contains the control character U+0007; remove it"
    ]


def test_bad_explicit_tag_has_a_position(tmp_path: Path) -> None:
    assert read_problems(tmp_path / "x.yaml", "a:\n  b: !!int many\n") == [
        "2:6: cannot read this value: invalid literal for int() with base 10: 'many'"
    ]


def test_yaml_1_1_surprises_stay_text(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("ext: 0101\nwait: 1:30\nregion: NO\nday: 2024-13-01\non: yes\nn: [1, -2, 1.5, .inf, true, null]\n")
    assert Document.read(path).data == {
        "ext": "0101",
        "wait": "1:30",
        "region": "NO",
        "day": "2024-13-01",
        "on": "yes",
        "n": [1, -2, 1.5, float("inf"), True, None],
    }


def _typed(data: object) -> object:
    """``data`` with every value's type beside it: 1, 1.0 and True are equal, and must not pass for each other."""
    if isinstance(data, dict):
        return {_typed(key): _typed(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_typed(item) for item in data]
    return type(data).__name__, data


def _composed(text: str) -> tuple[_FastLoader, Any]:
    loader = _FastLoader(text)
    return loader, loader.get_single_node()


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\nmanagers:\n- {id: m1, name: Anna, extension: '101', skills: [ru, en]}\n- id: m2\n  limit: 2.5\n",
        "a: true\nb: FALSE\nc: ~\nd: null\ne: -12\nf: .inf\ng: 1.5e3\nh: 0101\ni: '7'\nj: 2024-01-02\n=: =\n",
        "a: !!int '12'\nb: !!float 1\nc: !!binary aGk=\nd: !!timestamp 2024-01-02\ne: !!str 5\nf: !!null ''\n",
        "a: &x hi\nb: *x\nc: [*x, *x]\n",  # aliases of scalars
        "- [[1, {b: [c, '']}]]\n- {}\n- []\n- ''\n",
        "just text\n",
        "~\n",
    ],
)
def test_a_regular_document_is_built_in_one_walk_as_pyyaml_constructs_it(tmp_path: Path, text: str) -> None:
    loader, root = _composed(text)
    assert _typed(_plain(loader, root, set())) == _typed(yaml.load(text, Loader=_Loader))
    path = tmp_path / "x.yaml"
    path.write_text(text)
    assert _typed(Document.read(path).data) == _typed(yaml.load(text, Loader=_Loader))


@pytest.mark.parametrize(
    "text",
    [
        "a: &x [1]\nb: *x\n",  # an alias of a collection: one object in both places, as PyYAML builds it
        "base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n",  # a merge key
        "a: !!set {x, y}\nb: !!omap [{x: 1}]\nc: !!pairs [{x: 1}, {x: 2}]\n",  # collections of their own tags
        "? [a]\n: 1\nb: 2\n",  # a key that is not a scalar
        "a: 1\nb: 2\na: 3\n",  # a key twice
        "[" * 600 + "]" * 600 + "\n",  # deeper than the walk may recurse
    ],
)
def test_what_the_walk_leaves_to_pyyaml_reads_as_pyyaml_constructs_it(tmp_path: Path, text: str) -> None:
    loader, root = _composed(text)
    with pytest.raises((_Irregular, RecursionError)):
        _plain(loader, root, set())
    path = tmp_path / "x.yaml"
    path.write_text(text)
    if text.startswith("? [a]"):  # PyYAML refuses it, with its place
        assert read_problems(path, text) == [
            "1:3: while constructing a mapping (line 1, column 1), found unhashable key"
        ]
        return
    data = Document.read(path).data  # a key twice is reported when the data is validated
    expected = yaml.load(text, Loader=_FastLoader)  # libyaml's: _Loader's composer recurses
    if text.startswith("[["):
        assert data == expected  # lists in lists alone, too deep for _typed
    else:
        assert _typed(data) == _typed(expected)
    if text.startswith("a: &x"):
        assert data["a"] is data["b"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: !!map text\n", "1:4: expected a mapping node, but found scalar"),
        ("a: !custom x\n", "1:4: could not determine a constructor for the tag '!custom'"),
        ("a: !!bool x\n", "1:4: cannot read this value: 'x'"),
        ("a: !!int ''\n", "1:4: cannot read this value: string index out of range"),
        ("a: !!timestamp x\n", "1:4: cannot read this value: 'NoneType' object has no attribute 'groupdict'"),
    ],
)
def test_a_bad_tag_is_a_problem_with_its_place(tmp_path: Path, text: str, problem: str) -> None:
    assert read_problems(tmp_path / "a.yaml", text) == [problem]
