"""What is wrong with a configuration, said where it is wrong."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One finding in a config source.

    ``line`` and ``column`` are 1-based; 0 means the source has no positions
    (a dict built in code, an environment variable, a file that cannot be read).
    ``path`` is empty when the problem concerns the source as a whole.
    """

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return ": ".join(part for part in (where, self.path, self.message) if part)


class ConfigError(Exception):
    """A config source was refused; ``problems`` lists everything found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = problems
