"""Field paths into JSON documents: a small JSONPath subset of dotted keys and list indices.

Syntax (the leading ``$`` may be left out)::

    $.note                 the key "note" of the top-level object
    $.order.lines[0].sku   nested keys, then the first element of a list
    $.items[-1]            the last element
    $.inputs[*]            every element of a list: one match each
    $['key with spaces']   a key that is not a plain name (single or double quotes)
    $                      the whole document (e.g. a record whose value is a JSON string)

A plain name is letters, digits, ``_`` and ``-``, not starting with a digit or ``-``. Keys match
object members exactly (case-sensitive); indices match list elements only (a key never matches a
list, an index never matches an object). A path that matches nothing raises `FieldNotFound`,
saying where it stopped; `FieldPath.parse` raises `FieldPathError` for a malformed path, naming
the character.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from streams.errors import KinferError

__all__ = ["WILDCARD", "FieldNotFound", "FieldPath", "FieldPathError", "Step"]

#: The step that matches every element of a list.
WILDCARD: Final = "*"

#: A step: an object key (str), a list index (int) or every element (WILDCARD, "*").
Step = str | int

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_INDEX = re.compile(r"-?[0-9]+")


class FieldPathError(KinferError, ValueError):
    """A field path that cannot be parsed."""

    def __init__(self, path: str, position: int, expected: str) -> None:
        found = repr(path[position]) if position < len(path) else "the end"
        super().__init__(
            f"bad field path {path!r}: expected {expected} at character {position + 1}, "
            f"found {found} (e.g. $.note, $.order.lines[0].sku, $.inputs[*], $['a key'])"
        )


class FieldNotFound(KinferError, LookupError):
    """A document in which a field path matches nothing."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path} matches nothing: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FieldPath:
    """A parsed field path; `parse` one, then `find` (all matches) or `get` (exactly one)."""

    text: str
    steps: tuple[Step, ...]

    @classmethod
    def parse(cls, text: str) -> FieldPath:
        """Parse ``text`` (see the module docstring); raises FieldPathError."""
        canonical = _canonical(text)
        return cls(canonical, tuple(_parse_steps(canonical)))

    @classmethod
    def key(cls, name: str) -> FieldPath:
        """The path of one top-level key, whatever characters it holds (a column name)."""
        return cls(_join("$", name), (name,))

    @property
    def has_wildcard(self) -> bool:
        """Whether the path can match several values (it holds a ``[*]``)."""
        return WILDCARD in self.steps

    def find(self, document: Any) -> list[Any]:
        """Every value the path matches in ``document``, in document order.

        Raises FieldNotFound when there is none (an empty list under ``[*]`` included).
        """
        matches = list(self._walk(document, 0, "$"))
        if not matches:  # walk again for the reason: the first step that failed
            raise FieldNotFound(self.text, self._why_not(document))
        return matches

    def get(self, document: Any) -> Any:
        """The one value the path matches; FieldNotFound if none, ValueError for a ``[*]`` path."""
        if self.has_wildcard:
            raise ValueError(f"{self.text} can match several values; use find()")
        return self.find(document)[0]

    def _walk(self, node: Any, depth: int, where: str) -> Iterator[Any]:
        if depth == len(self.steps):
            yield node
            return
        step = self.steps[depth]
        if step == WILDCARD:
            if isinstance(node, list):
                for index, child in enumerate(node):
                    yield from self._walk(child, depth + 1, f"{where}[{index}]")
        elif isinstance(step, int):
            if isinstance(node, list) and -len(node) <= step < len(node):
                yield from self._walk(node[step], depth + 1, f"{where}[{step}]")
        elif isinstance(node, dict) and step in node:
            yield from self._walk(node[step], depth + 1, _join(where, step))

    def _why_not(self, node: Any, depth: int = 0, where: str = "$") -> str:
        """Why the path matches nothing below ``node``: the first place the walk stopped."""
        for step in self.steps[depth:]:
            depth += 1
            if step == WILDCARD:
                if not isinstance(node, list):
                    return f"{where} is {_kind(node)}, not a list"
                if not node:
                    return f"{where} is an empty list"
                return self._why_not(node[0], depth, f"{where}[0]")  # none matched: the first
            if isinstance(step, int):
                if not isinstance(node, list):
                    return f"{where} is {_kind(node)}, not a list"
                if not -len(node) <= step < len(node):
                    return f"{where} has {len(node)} element(s), no index {step}"
                node, where = node[step], f"{where}[{step}]"
            else:
                if not isinstance(node, dict):
                    return f"{where} is {_kind(node)}, not an object"
                if step not in node:
                    return f"{where} has no key {step!r}"
                node, where = node[step], _join(where, step)
        return "no match"  # pragma: no cover - find() only asks when the walk found nothing


def _parse_steps(text: str) -> Iterator[Step]:
    """The steps of ``text``, already in canonical form (starting with ``$``)."""
    i = 1
    while i < len(text):
        char = text[i]
        if char == ".":
            match = _NAME.match(text, i + 1)
            if match is None:
                raise FieldPathError(text, i + 1, "a name (letters, digits, _ or -)")
            yield match.group()
            i = match.end()
        elif char == "[":
            step, i = _bracket(text, i + 1)
            yield step
        else:
            raise FieldPathError(text, i, "'.' or '['")


def _bracket(text: str, i: int) -> tuple[Step, int]:
    """The step inside ``[...]`` starting at ``i`` and the position after its ``]``."""
    if text.startswith("*]", i):
        return WILDCARD, i + 2
    if i < len(text) and text[i] in "'\"":
        quote, j = text[i], i + 1
        chars: list[str] = []
        while j < len(text) and text[j] != quote:
            if text[j] == "\\" and j + 1 < len(text):
                j += 1
            chars.append(text[j])
            j += 1
        if j >= len(text):
            raise FieldPathError(text, j, f"a closing {quote}")
        if not text.startswith("]", j + 1):
            raise FieldPathError(text, j + 1, "']'")
        return "".join(chars), j + 2
    match = _INDEX.match(text, i)
    if match is None:
        raise FieldPathError(text, i, "an index, '*' or a quoted key")
    if not text.startswith("]", match.end()):
        raise FieldPathError(text, match.end(), "']'")
    return int(match.group()), match.end() + 1


def _canonical(text: str) -> str:
    """``text`` starting with ``$``: a bare name ("note") means "$.note", ".note" or "[0]" too."""
    if text.startswith("$"):
        return text
    return f"${text}" if text.startswith((".", "[")) else f"$.{text}"


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if _NAME.fullmatch(key) else f"{where}[{key!r}]"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return "an object" if isinstance(value, dict) else "a list"
