"""The subset of Asterisk's extensions.conf that leadrouter's dialplans use, and its expression language.

Supported: ``[context]`` sections, ``exten => pattern,priority(label),App(args)``,
``same => n(label),App(args)``, ``;`` comments, ``[general]`` (ignored) and ``[globals]``
(global variables). Anything else is rejected with the line number, so a dialplan that relies
on a feature the simulator lacks fails loudly instead of behaving differently from Asterisk.
"""

from __future__ import annotations

import logging
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    app: str
    args: str  # raw text, substituted when the step runs (as Asterisk does)


@dataclass
class Extension:
    pattern: str
    steps: dict[int, Step] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)


_CLASS = {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]"}
# Asterisk tries the most specific pattern first: a literal digit beats N, N beats Z, Z beats X,
# and the wildcards come last.
_WEIGHT = {"X": 10, "Z": 9, "N": 8, ".": 1000, "!": 1001}


def _compile_pattern(pattern: str) -> tuple[re.Pattern[str], tuple[int, ...]]:
    body = pattern[1:]
    regex: list[str] = []
    weights: list[int] = []
    pos = 0
    while pos < len(body):
        char = body[pos]
        upper = char.upper()
        if upper in _CLASS:
            regex.append(_CLASS[upper])
            weights.append(_WEIGHT[upper])
        elif char == ".":
            regex.append(".+")
            weights.append(_WEIGHT["."])
        elif char == "!":
            regex.append(".*")
            weights.append(_WEIGHT["!"])
        elif char == "[":
            end = body.find("]", pos)
            if end < 0:
                raise ValueError(f"unterminated [ in pattern {pattern!r}")
            chars = body[pos + 1 : end]
            regex.append("[" + chars.replace("\\", "\\\\") + "]")
            weights.append(max(len(chars), 2))
            pos = end
        else:
            regex.append(re.escape(char))
            weights.append(1)
        pos += 1
    return re.compile("".join(regex) + r"\Z"), tuple(weights)


@dataclass
class Context:
    name: str
    literal: dict[str, Extension] = field(default_factory=dict)
    patterns: list[tuple[tuple[int, ...], int, re.Pattern[str], Extension]] = field(default_factory=list)

    def extension(self, pattern: str) -> Extension:
        if not pattern.startswith("_"):
            return self.literal.setdefault(pattern, Extension(pattern))
        for _, _, _, ext in self.patterns:
            if ext.pattern == pattern:
                return ext
        regex, weights = _compile_pattern(pattern)
        ext = Extension(pattern)
        self.patterns.append((weights, len(self.patterns), regex, ext))
        self.patterns.sort(key=lambda entry: (entry[0], entry[1]))
        return ext

    def match(self, exten: str) -> Extension | None:
        found = self.literal.get(exten)
        if found is not None:
            return found
        for _, _, regex, ext in self.patterns:
            if regex.match(exten):
                return ext
        return None


_SECTION = re.compile(r"^\[([^\]]+)\]$")
_PRIORITY = re.compile(r"^(\d+|n)(?:\(([^)]*)\))?$")


class Dialplan:
    def __init__(self, contexts: dict[str, Context], globals_: dict[str, str]) -> None:
        self.contexts = contexts
        self.globals = globals_

    @classmethod
    def parse(cls, text: str) -> Dialplan:
        contexts: dict[str, Context] = {}
        globals_: dict[str, str] = {}
        section: str | None = None
        current: Extension | None = None
        last_priority = 0
        for number, raw in enumerate(text.splitlines(), start=1):
            line = _strip_comment(raw).strip()
            if not line:
                continue
            header = _SECTION.match(line)
            if header:
                section = header.group(1).strip()
                current = None
                if section not in ("general", "globals"):
                    contexts.setdefault(section, Context(section))
                continue
            if section is None:
                raise ValueError(f"line {number}: {raw.strip()!r} outside any [section]")
            if section == "general":
                continue
            key, sep, value = _split_assignment(line)
            if not sep:
                raise ValueError(f"line {number}: cannot parse {raw.strip()!r}")
            if section == "globals":
                globals_[key] = value
                continue
            if key == "exten":
                pattern, _, rest = value.partition(",")
                current = contexts[section].extension(pattern.strip())
                last_priority = 0
            elif key == "same":
                if current is None:
                    raise ValueError(f"line {number}: 'same' without a preceding 'exten'")
                rest = value
            else:
                raise ValueError(f"line {number}: unsupported {key!r} (the simulator knows exten/same)")
            priority_text, _, app_text = rest.partition(",")
            priority_match = _PRIORITY.match(priority_text.strip())
            if priority_match is None:
                raise ValueError(f"line {number}: unsupported priority {priority_text.strip()!r}")
            token, label = priority_match.groups()
            priority = last_priority + 1 if token == "n" else int(token)
            current.steps[priority] = _parse_app(app_text.strip())
            if label:
                current.labels[label] = priority
            last_priority = priority
        return cls(contexts, globals_)

    def extension(self, context: str, exten: str) -> Extension | None:
        found = self.contexts.get(context)
        return found.match(exten) if found is not None else None

    def step(self, context: str, exten: str, priority: int) -> Step | None:
        ext = self.extension(context, exten)
        return ext.steps.get(priority) if ext is not None else None

    def priority(self, context: str, exten: str, priority: str) -> int | None:
        """A priority given as a number or a label, as Goto and Redirect accept it."""
        if priority.isdigit():
            return int(priority)
        ext = self.extension(context, exten)
        return ext.labels.get(priority) if ext is not None else None


def _strip_comment(line: str) -> str:
    # A backslash keeps a literal ';' (as in Asterisk); everything after a bare one is a comment.
    semicolon = 0
    while True:
        semicolon = line.find(";", semicolon)
        if semicolon < 0:
            return line
        if semicolon > 0 and line[semicolon - 1] == "\\":
            line = line[: semicolon - 1] + line[semicolon:]
            continue
        return line[:semicolon]


def _split_assignment(line: str) -> tuple[str, str, str]:
    arrow = line.find("=>")
    equals = line.find("=")
    if arrow >= 0 and arrow <= equals:
        return line[:arrow].strip(), "=>", line[arrow + 2 :].strip()
    if equals >= 0:
        return line[:equals].strip(), "=", line[equals + 1 :].strip()
    return line, "", ""


def _parse_app(text: str) -> Step:
    paren = text.find("(")
    if paren < 0:
        return Step(text, "")
    close = text.rfind(")")
    if close < paren:
        raise ValueError(f"unbalanced parentheses in {text!r}")
    return Step(text[:paren].strip(), text[paren + 1 : close])


def split_args(text: str) -> list[str]:
    """Split application arguments on commas outside parentheses and double quotes, like Asterisk."""
    args: list[str] = []
    current: list[str] = []
    depth = 0
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
            continue
        if not quoted:
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
            elif char == "," and depth == 0:
                args.append("".join(current))
                current = []
                continue
        current.append(char)
    args.append("".join(current))
    return args


def substitute(text: str, resolve: Callable[[str], str]) -> str:
    """Expand ``${VAR}``, ``${VAR:offset[:length]}`` and ``$[expression]``, innermost first."""
    if "$" not in text:
        return text
    out: list[str] = []
    start = 0
    size = len(text)
    while start < size:
        dollar = text.find("$", start)
        if dollar < 0 or dollar + 1 >= size:
            out.append(text[start:])
            break
        kind = text[dollar + 1]
        if kind not in "{[":
            out.append(text[start : dollar + 1])
            start = dollar + 1
            continue
        out.append(text[start:dollar])
        opening, closing = ("{", "}") if kind == "{" else ("[", "]")
        depth = 1
        end = dollar + 2
        while end < size and depth:
            if text[end] == opening:
                depth += 1
            elif text[end] == closing:
                depth -= 1
            end += 1
        if depth:
            out.append(text[dollar:])
            break
        inner = substitute(text[dollar + 2 : end - 1], resolve)
        out.append(_variable(inner, resolve) if kind == "{" else evaluate(inner))
        start = end
    return "".join(out)


def _variable(spec: str, resolve: Callable[[str], str]) -> str:
    # The offset/length colons come after the name, which may be a function call with its own ':'.
    close = spec.rfind(")")
    colon = spec.find(":", close + 1 if close >= 0 else 0)
    if colon < 0:
        return resolve(spec)
    value = resolve(spec[:colon])
    parts = spec[colon + 1 :].split(":")
    try:
        offset = int(parts[0] or 0)
        length = int(parts[1]) if len(parts) > 1 and parts[1] else None
    except ValueError:
        return value
    if offset < 0:
        offset = max(len(value) + offset, 0)
    value = value[offset:]
    if length is None:
        return value
    return value[:length] if length >= 0 else value[: max(len(value) + length, 0)]


_TOKEN = re.compile(r'\s*(?:"([^"]*)"|(!=|<=|>=|==|[=<>&|!()+\-])|([^\s"=<>&|!()+\-]+))')
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def evaluate(expression: str) -> str:
    """Asterisk's ``$[...]``: comparisons give "1"/"0", ``&``/``|`` return an operand, + and - add."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    stripped = expression.rstrip()
    while pos < len(stripped):
        token = _TOKEN.match(stripped, pos)
        if token is None or token.end() == pos:
            log.warning("cannot evaluate $[%s]", expression)
            return ""
        quoted, operator, bare = token.groups()
        if operator is not None:
            tokens.append(("op", operator))
        else:
            tokens.append(("val", quoted if quoted is not None else bare))
        pos = token.end()
    if not tokens:
        return ""
    try:
        parser = _Parser(tokens)
        value = parser.parse()
    except (IndexError, ValueError):
        log.warning("cannot evaluate $[%s]", expression)
        return ""
    return value


def truthy(value: str) -> bool:
    """How GotoIf and ``&``/``|`` read a value: empty and numeric zero are false."""
    return value != "" and not (_NUMBER.match(value) and float(value) == 0)


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def parse(self) -> str:
        value = self._or()
        if self.pos != len(self.tokens):
            raise ValueError("trailing tokens")
        return value

    def _peek(self) -> str | None:
        if self.pos < len(self.tokens) and self.tokens[self.pos][0] == "op":
            return self.tokens[self.pos][1]
        return None

    def _or(self) -> str:
        left = self._and()
        while self._peek() == "|":
            self.pos += 1
            right = self._and()
            left = left if truthy(left) else right
        return left

    def _and(self) -> str:
        left = self._compare()
        while self._peek() == "&":
            self.pos += 1
            right = self._compare()
            left = left if truthy(left) and truthy(right) else "0"
        return left

    def _compare(self) -> str:
        left = self._sum()
        while self._peek() in _COMPARISONS:
            compare = _COMPARISONS[self.tokens[self.pos][1]]
            self.pos += 1
            right = self._sum()
            if _NUMBER.match(left) and _NUMBER.match(right):
                result = compare(float(left), float(right))
            else:
                result = compare(left, right)
            left = "1" if result else "0"
        return left

    def _sum(self) -> str:
        left = self._unary()
        while self._peek() in ("+", "-"):
            sign = self.tokens[self.pos][1]
            self.pos += 1
            right = self._unary()
            if not (_NUMBER.match(left) and _NUMBER.match(right)):
                raise ValueError("non-numeric operand")
            total = float(left) + float(right) if sign == "+" else float(left) - float(right)
            left = _number(total)
        return left

    def _unary(self) -> str:
        prefix = self._peek()
        if prefix == "!":
            self.pos += 1
            return "0" if truthy(self._unary()) else "1"
        if prefix == "-":
            self.pos += 1
            return _number(-float(self._unary()))
        if prefix == "(":
            self.pos += 1
            value = self._or()
            if self._peek() != ")":
                raise ValueError("missing )")
            self.pos += 1
            return value
        kind, value = self.tokens[self.pos]
        if kind != "val":
            raise ValueError(f"unexpected {value!r}")
        self.pos += 1
        return value
