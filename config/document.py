"""YAML sources that remember where every value was written, validated by pydantic.

Pydantic validates plain data and reports a ``loc`` path; the composed YAML nodes
know the line and column of every key and value. Keeping the two side by side
turns each pydantic error into ``file:line:col: path: message``.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, AnyStr, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from yaml.error import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from config.problems import ConfigError, Problem

Loc = tuple[str | int, ...]
Model = TypeVar("Model", bound=BaseModel)

_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_VALUE = "tag:yaml.org,2002:value"  # YAML 1.1's `=`, which SafeLoader has no constructor for


class _CoreScalars:
    """What both loaders below share: a failing explicit tag is reported where it was written."""

    # Set by construction when a mapping has a merge key (`<<`) or a key twice: the walk that
    # says where each value was written must then see the nodes as written, before construction.
    irregular = False

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)  # type: ignore[misc]
        except (ValueError, KeyError, IndexError, AttributeError) as exc:
            # An explicit tag such as `!!int abc`, `!!bool x` or `!!int ''` fails deep in PyYAML,
            # without a position and with whatever its code ran into.
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value: {exc}", node.start_mark
            ) from exc

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        # A scalar tagged `!!map` is not a mapping: PyYAML's construct_mapping says so, with its place.
        if isinstance(node, MappingNode) and any(key_node.tag == _MERGE for key_node, _ in node.value):
            self.irregular = True  # flattening the merge rewrites the node
        mapping: dict[Hashable, Any] = super().construct_mapping(node, deep)  # type: ignore[misc]
        if len(mapping) < len(node.value):
            self.irregular = True
        return mapping


class _Loader(_CoreScalars, yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars.

    YAML 1.1 reads ``0101`` as octal 65, ``1:30`` as 90, ``no`` as false and
    ``2024-13-01`` as a broken date. An extension, a duration or a region code
    written that way would silently become another value; here they stay text and
    the schema either accepts the text or says what is wrong with it (and ``=``, which
    YAML 1.1 tags a "value" PyYAML cannot build, is text too).
    """

    yaml_implicit_resolvers = {  # noqa: RUF012 (PyYAML reads it as a class attribute; its stubs say instance)
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in {_BOOL, _INT, _FLOAT, _TIMESTAMP, _VALUE}]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(_INT, re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


class _FastLoader(_CoreScalars, yaml.CSafeLoader):
    """The same loader on libyaml's C parser, with the same marks (line and column of every node):
    4-5x faster on a big routing.yaml. A file it refuses is read again by ``_Loader``, whose
    messages say more (libyaml's are terser), so a broken file is reported the same either way."""

    yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers


_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
# The tags of scalars SafeLoader builds (the others it has build collections).
_SCALAR_TAGS = frozenset({_NULL, _BOOL, _INT, _FLOAT, _TIMESTAMP, "tag:yaml.org,2002:binary"})


class _Irregular(Exception):
    """Something ``_plain`` leaves to PyYAML's constructor, which says what is wrong with it or
    knows how to build it: a merge key, a key written twice or not hashable, an alias of a
    collection (PyYAML shares one object between the two places), a tag of a collection of its
    own (``!!set``), a scalar its tag's constructor refuses."""


def _plain(loader: _FastLoader, node: Node, seen: set[int]) -> Any:
    """The data of a composed document, as ``loader.construct_document`` gives it for a regular
    one, in one walk: PyYAML's constructor, built for anchors, recursion and any tag, took 113 ms
    of the 560 ms a routing.yaml of 10,000 managers takes to read, this 30. Raises _Irregular.
    """
    if isinstance(node, ScalarNode):
        if node.tag == _STR:
            return node.value
        if node.tag not in _SCALAR_TAGS:
            raise _Irregular  # e.g. `!!map text`: PyYAML says what is wrong with it
        try:
            return loader.yaml_constructors[node.tag](loader, node)
        except Exception as exc:
            raise _Irregular from exc
    if id(node) in seen:
        raise _Irregular
    seen.add(id(node))
    if node.tag == _SEQ and isinstance(node, SequenceNode):
        return [_plain(loader, item, seen) for item in node.value]
    if node.tag != _MAP or not isinstance(node, MappingNode):
        raise _Irregular
    mapping: dict[Hashable, Any] = {}
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE or not isinstance(key_node, ScalarNode):
            raise _Irregular
        key = _plain(loader, key_node, seen)
        if key in mapping:
            raise _Irregular
        mapping[key] = _plain(loader, value_node, seen)
    return mapping


@dataclass(frozen=True)
class _Spot:
    key: Mark | None  # None for sequence items and the document root
    value: Mark
    empty: bool  # `key:` with nothing after it: the key is the only thing to point at

    def mark(self, at_key: bool) -> Mark:
        if self.key is not None and (at_key or self.empty):
            return self.key
        return self.value


class Document:
    """Plain data from one source, plus where each piece of it was written."""

    def __init__(
        self,
        source: str,
        data: Any,
        spots: dict[Loc, _Spot] | Callable[[], dict[Loc, _Spot]],
        problems: list[Problem],
    ) -> None:
        self.source = source
        self.data = data
        self._spots_or_walk = spots  # a walk is run only when a problem needs a place
        self._problems = problems  # found while reading, e.g. duplicate keys
        self._origins: dict[Loc, str] = {}

    @property
    def _spots(self) -> dict[Loc, _Spot]:
        if callable(self._spots_or_walk):
            self._spots_or_walk = self._spots_or_walk()
        return self._spots_or_walk

    @classmethod
    def read(cls, path: Path) -> Document:
        """Read and compose a YAML file; raise ConfigError if it is not readable YAML."""
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
            loader = _FastLoader(text)
            try:
                root = loader.get_single_node()
                try:
                    data = _plain(loader, root, set()) if root is not None else None
                except (_Irregular, RecursionError):  # PyYAML's constructor does not recurse
                    data = loader.construct_document(root)
                    loader.irregular = True
            finally:
                loader.dispose()
            if root is None:
                return cls(source, data, {}, [])
            if not loader.irregular:
                # A file with no merge and no key twice has nothing for the walk to report: it is
                # put off until a problem needs its place, and a good file (the usual case) skips it,
                # a third of the reading of a big routing.yaml.
                composed = root
                return cls(source, data, lambda: _walk(_Loader(""), source, composed)[0], [])
            loader = _FastLoader(text)  # construction flattened the merges: compose again, as written
            try:
                root = loader.get_single_node()
                assert root is not None  # the same text composed to a node a moment ago
                spots, duplicates = _walk(loader, source, root)
                data = loader.construct_document(root)
            finally:
                loader.dispose()
        except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
            return cls._read_slowly(path)  # to say what is wrong, as precisely as PyYAML can
        return cls(source, data, spots, duplicates)

    @classmethod
    def _read_slowly(cls, path: Path) -> Document:
        source = str(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError([Problem(source, 0, 0, "", f"cannot read the file: {exc.strerror or exc}")]) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line, column = _position(raw, exc.start, b"\n")
            message = f"is not UTF-8 text (byte {raw[exc.start]:#04x})"
            raise ConfigError([Problem(source, line, column, "", message)]) from None
        try:
            loader = _Loader(text)
        except yaml.reader.ReaderError as exc:
            line, column = _position(text, exc.position, "\n")
            message = f"contains the control character U+{exc.character:04X}; remove it"
            raise ConfigError([Problem(source, line, column, "", message)]) from None
        try:
            root = loader.get_single_node()
            spots, duplicates = _walk(loader, source, root) if root is not None else ({}, [])
            data = loader.construct_document(root) if root is not None else None
        except yaml.MarkedYAMLError as exc:
            raise ConfigError([_syntax_problem(source, exc)]) from None
        except RecursionError:
            raise ConfigError([Problem(source, 0, 0, "", "is nested too deeply to read")]) from None
        finally:
            loader.dispose()
        return cls(source, data, spots, duplicates)

    def override(self, loc: tuple[str, ...], value: object, origin: str) -> None:
        """Put a value that comes from outside the source; its problems name ``origin``."""
        if self.data is None:
            self.data = {}
        target = self.data
        for key in loc[:-1]:
            if not isinstance(target, dict):
                return  # the source has something else here; validation reports it
            if target.get(key) is None:
                target[key] = {}
            target = target[key]
        if isinstance(target, dict):
            target[loc[-1]] = value
            self._origins[loc] = origin

    def validate(
        self,
        model: type[Model],
        cross_check: Callable[[Any], Iterable[tuple[Loc, str]]] | None = None,
    ) -> Model:
        """Validate against ``model``, run ``cross_check`` on the same data; raise ConfigError.

        ``cross_check`` runs even when the schema fails, so one pass reports everything;
        it must skip what it cannot make sense of.
        """
        data = {} if self.data is None else self.data
        problems = list(self._problems)
        if cross_check is not None:
            problems += [self.problem(loc, message) for loc, message in cross_check(data)]
        try:
            result = model.model_validate(data)
        except ValidationError as exc:
            problems += [self._from_pydantic(model, error) for error in exc.errors(include_url=False)]
        if problems:
            raise ConfigError(sorted(problems, key=lambda problem: (problem.line, problem.column)))
        return result

    def problem(self, loc: Loc, message: str, *, at_key: bool = False) -> Problem:
        """A problem about the value at ``loc``, placed at the nearest thing written in the source."""
        path = _path(loc)
        for origin_loc, origin in self._origins.items():
            if loc[: len(origin_loc)] == origin_loc:
                return Problem(origin, 0, 0, path, message)
        for length in range(len(loc), -1, -1):
            spot = self._spots.get(loc[:length])
            if spot is not None:
                mark = spot.mark(at_key and length == len(loc))
                return Problem(self.source, mark.line + 1, mark.column + 1, path, message)
        return Problem(self.source, 1, 1, path, message)  # nothing nearer was written: the top of the file

    def _from_pydantic(self, model: type[BaseModel], error: ErrorDetails) -> Problem:
        loc = error["loc"]
        kind = error["type"]
        if kind == "extra_forbidden":
            return self.problem(loc, _unknown_key(model, loc), at_key=True)
        if kind == "missing":
            return self.problem(loc, _missing_key(model, loc))
        if error["input"] is None:
            return self.problem(loc, "has no value")
        if kind in _MESSAGES:
            return self.problem(loc, _MESSAGES[kind].format(**error.get("ctx", {})))
        return self.problem(loc, error["msg"].replace("Input should be", "must be", 1))


# Pydantic's wording where it is not what an ops person reads best; the rest says "Input should be ...".
_MESSAGES = {
    "value_error": "{error}",
    "model_type": "must be a mapping of `key: value` lines",
    "dict_type": "must be a mapping of `key: value` lines",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "invalid_key": "keys must be text",
    "too_short": "needs at least {min_length} item(s)",
    "string_too_long": "must be at most {max_length} characters",
}


def _walk(loader: _Loader | _FastLoader, source: str, root: Node) -> tuple[dict[Loc, _Spot], list[Problem]]:
    """Marks of every mapping key/value and sequence item by path, and duplicate keys."""
    spots: dict[Loc, _Spot] = {(): _Spot(None, root.start_mark, False)}
    duplicates: list[Problem] = []
    # Aliases share nodes: visiting each node once keeps the walk linear and ends cycles.
    seen: set[int] = set()

    def visit(node: Node, loc: Loc) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                spots[(*loc, index)] = _Spot(None, item.start_mark, _is_empty(item))
                visit(item, (*loc, index))
        elif isinstance(node, MappingNode):
            first: dict[Hashable, Mark] = {}
            for key_node, value_node in node.value:
                # Merged (`<<`) and complex keys get no spot: their problems point at the mapping.
                if key_node.tag == _MERGE or not isinstance(key_node, ScalarNode):
                    continue
                key = loader.construct_object(key_node)
                here = (*loc, key)
                if key in first:
                    duplicates.append(
                        Problem(
                            source,
                            key_node.start_mark.line + 1,
                            key_node.start_mark.column + 1,
                            _path(here),
                            f"duplicate key: line {first[key].line + 1} sets it too and this one would win",
                        )
                    )
                first.setdefault(key, key_node.start_mark)
                spots[here] = _Spot(key_node.start_mark, value_node.start_mark, _is_empty(value_node))
                visit(value_node, here)

    visit(root, ())
    return spots, duplicates


def _is_empty(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL and node.value == ""


def _syntax_problem(source: str, exc: yaml.MarkedYAMLError) -> Problem:
    # PyYAML's own order reads best: "while parsing X (where it started), what went wrong".
    parts = []
    if exc.context:
        at = exc.context_mark
        parts.append(f"{exc.context} (line {at.line + 1}, column {at.column + 1})" if at else exc.context)
    if exc.problem:
        parts.append(exc.problem)
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
    return Problem(source, line, column, "", ", ".join(parts) or "is not valid YAML")


def _position(text: AnyStr, offset: int, newline: AnyStr) -> tuple[int, int]:
    return text.count(newline, 0, offset) + 1, offset - text.rfind(newline, 0, offset)


def _path(loc: Loc) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model that validates the mapping at ``loc``, to name its keys in messages."""
    current: Any = model
    for part in loc:
        current = _unwrapped(current)
        if isinstance(part, int) and get_origin(current) in (list, tuple):
            current = get_args(current)[0]
        elif get_origin(current) is dict:
            current = get_args(current)[1]  # a mapping by name (`pbxes:`): the value's model
        elif isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[str(part)].annotation
        else:
            return None
    current = _unwrapped(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrapped(annotation: Any) -> Any:
    """``X`` of ``X | None`` and of ``Annotated[X, ...]``, however nested."""
    while True:
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if get_origin(annotation) is Annotated:
            annotation = args[0]
        elif get_origin(annotation) in (Union, types.UnionType) and len(args) == 1:
            annotation = args[0]
        else:
            return annotation


def _unknown_key(model: type[BaseModel], loc: Loc) -> str:
    owner = _model_at(model, loc[:-1])
    if owner is None:
        return "unknown key"
    known = list(owner.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    if close:
        return f"unknown key; did you mean '{close[0]}'?"
    return f"unknown key; allowed here: {', '.join(known)}"


def _missing_key(model: type[BaseModel], loc: Loc) -> str:
    owner = _model_at(model, loc[:-1])
    field = owner.model_fields.get(str(loc[-1])) if owner is not None else None
    if field is not None and field.description:
        return f"required key is missing: {field.description}"
    return "required key is missing"
