"""A model's reply, read into a result value: pure text in, value out.

The reply's JSON is found in this order: the whole reply, a fenced code block, the first
complete JSON value in the text. An object with a ``response`` key gives that value, and
its ``comment`` (if any) travels with it. A reply with no JSON is its trimmed text.

Every step is linear in the reply's length, whatever its shape (a reply is up to the
model, or to whoever answers at the API's address): the fences are found in one pass over
the lines, and the first complete JSON value in one pass over the brackets (see
:func:`_first_value`), so many openings that never close, or many fences, cost no more
than one.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_CLOSING = re.compile(r" {0,3}(`{3,}|~{3,})[ \t]*")
_DECODER = json.JSONDecoder()
_NOT_JSON = (ValueError, RecursionError)  # json raises RecursionError for very deep nesting
_STRUCTURE = re.compile(r'[\[\]{}"]')  # inside a bracket: what changes the state
_OPENING = re.compile(r"[\[{]")  # outside every bracket: only an opening does
_STRING_BODY = re.compile(r'(?:[^"\\\x00-\x1f]|\\.)*')  # a JSON string's body, up to its end
_CLOSES = {"]": "[", "}": "{"}
MAX_DEPTH = 400  # brackets open at once that are looked into (json cannot decode far deeper)
_CHILD = " 0 "  # what a valid nested value stands for when its parent is checked


@dataclass(frozen=True)
class Reading:
    """What a reply means: the value, and the model's comment on it (or None)."""

    value: Any
    comment: str | None = None


def read_reply(text: str) -> Reading:
    found = _find_json(text)
    if found is _NOTHING:
        return Reading(text.strip())
    if isinstance(found, dict) and "response" in found:
        comment = found.get("comment")
        if comment is not None and not isinstance(comment, str):
            comment = json.dumps(comment, ensure_ascii=False)
        return Reading(found["response"], comment.strip() if comment else None)
    return Reading(found)


_NOTHING = object()


def _find_json(text: str) -> Any:
    stripped = text.strip()
    if not stripped:
        return _NOTHING
    try:
        return json.loads(stripped)
    except _NOT_JSON:
        pass
    for block in _fenced_blocks(text.replace("\r\n", "\n")):
        try:
            return json.loads(block)
        except _NOT_JSON:
            continue
    span = _first_value(text)
    if span is None:
        return _NOTHING
    try:
        return json.loads(text[span[0]:span[1]])
    except _NOT_JSON:  # not expected: the span was checked by json itself
        return _NOTHING


def _fenced_blocks(text: str) -> list[str]:
    """The contents of the fenced code blocks, in one pass: a fence opened by a line of
    three or more backticks (or tildes) ends at the first line of at least as many of the
    same, and nothing else; a fence that never ends runs to the end of the reply."""
    blocks: list[str] = []
    fence: str | None = None
    inside: list[str] = []
    for line in text.split("\n"):
        if fence is None:
            opening = _FENCE.match(line)
            if opening:
                fence, inside = opening.group(1), []
            continue
        closing = _CLOSING.fullmatch(line)
        if closing and closing.group(1)[0] == fence[0] and len(closing.group(1)) >= len(fence):
            blocks.append("\n".join(inside))
            fence = None
        else:
            inside.append(line)
    return blocks


@dataclass(slots=True)
class _Open:
    """A bracket not closed yet: where it is, and what its own level holds so far."""

    start: int
    char: str
    pieces: list[str] | None = None  # its text so far with each child as _CHILD, once it
    since: int = 0  # has a child; ``since``: where the text not yet in ``pieces`` starts
    size: int = 0  # of the text in ``pieces``
    check_at: int = 64  # its text so far is checked when ``size`` gets there (then doubled)
    failed: bool = False  # not JSON (a child is not, or its own text so far is not)
    best: tuple[int, int] | None = None  # its first child (or grandchild...) that is JSON

    @property
    def settled(self) -> bool:
        """Nothing more inside it can matter: it is not JSON, and has its first value."""
        return self.failed and self.best is not None

    def child(self, text: str, start: int, end: int, valid: bool,
              best: tuple[int, int] | None) -> None:
        if self.best is None:
            self.best = best
        if not valid:
            self.failed = True
        if self.failed:
            self.pieces = None
            return
        if self.pieces is None:
            self.pieces = []
        piece = text[self.since:start]
        self.pieces += (piece, _CHILD)
        self.size += len(piece) + len(_CHILD)
        self.since = end
        if self.size >= self.check_at:  # a level gone wrong early is not read to its end
            self.check_at *= 2
            self.pieces = ["".join(self.pieces)]
            if _fails_before_end(self.pieces[0]):
                self.failed, self.pieces = True, None


def _first_value(text: str) -> tuple[int, int] | None:
    """Where the first complete JSON array or object in ``text`` is (start, end), or None.

    "First" is by where it starts: the one ``json.JSONDecoder.raw_decode`` would find when
    tried at every ``[`` and ``{`` in turn, except that brackets inside a string inside a
    bracket are the string's text. One pass over the brackets pairs each with its closing
    one. When a bracket closes, json itself decides whether it is a value, reading only the
    bracket's own level (each nested value that is JSON stands in as ``0``; one that is not
    makes its parents not JSON either), so no character is read by json more than a few
    times. The first value that json accepts at the outermost level is the answer; inside a
    bracket that is not JSON (or never closes), the first of its nested values that is.
    """
    stack: deque[_Open] = deque()
    opened = {"[": 0, "{": 0}  # of each kind, on the stack
    position = 0
    while True:
        found = (_STRUCTURE if stack else _OPENING).search(text, position)
        if found is None:
            break
        index = found.start()
        char = found.group()
        position = index + 1
        if char == '"':
            body = _STRING_BODY.match(text, position)
            assert body is not None  # it matches the empty string at least
            position = body.end() + 1  # past the closing quote (or the character that is
            continue  # not allowed in a JSON string: the bracket is then not JSON)
        if char in "[{":
            if len(stack) == MAX_DEPTH:  # too deep for json: the outermost is not a value
                dropped = stack.popleft()
                opened[dropped.char] -= 1
                if dropped.best is not None:
                    return dropped.best
            entry = _Open(index, char, since=index)
            if stack and stack[-1].settled:
                entry.failed = True  # nothing in it can matter: only its brackets count
                entry.best = stack[-1].best
            stack.append(entry)
            opened[char] += 1
            continue
        opener = _CLOSES[char]
        if not opened[opener]:
            continue  # a stray closing bracket: in a string of prose, or not JSON anyway
        while stack[-1].char != opener:  # brackets it leaves open are not JSON
            left_open = stack.pop()
            opened[left_open.char] -= 1
            if stack:
                stack[-1].child(text, left_open.start, index, False, left_open.best)
        entry = stack.pop()
        opened[opener] -= 1
        valid = not entry.failed and _is_json(text, entry, position)
        best = (entry.start, position) if valid else entry.best
        if not stack:
            if best is not None:
                return best
            continue
        parent = stack[-1]
        if not parent.settled:
            parent.child(text, entry.start, position, valid, best)
    for entry in stack:  # never closed: the first value inside the outermost
        if entry.best is not None:
            return entry.best
    return None


# the C scanner under raw_decode: a value read from an index, without its checks around it
_SCAN: Callable[[str, int], tuple[Any, int]] = getattr(_DECODER, "scan_once")  # noqa: B009


def _is_json(text: str, entry: _Open, end: int) -> bool:
    """Whether ``entry``'s own level, closed at ``end``, is JSON (its children are)."""
    if entry.pieces is None:  # no child: read in place
        source, begin = text, entry.start
    else:
        source, begin = "".join(entry.pieces) + text[entry.since:end], 0
        end = len(source)
    try:
        _, stop = _SCAN(source, begin)
    except (StopIteration, *_NOT_JSON):
        return False
    return bool(stop == end)


def _fails_before_end(prefix: str) -> bool:
    """Whether json finds ``prefix`` (a bracket's level, unfinished) wrong before its end."""
    try:
        _SCAN(prefix, 0)
    except StopIteration as stop:
        return bool(stop.value < len(prefix))
    except json.JSONDecodeError as exc:
        return exc.pos < len(prefix)
    except RecursionError:
        return True
    return True  # a whole value: then the bracket's closing is wrong
