"""A model's reply, read into a result value: pure text in, value out.

The reply's JSON is found in this order: the whole reply, a fenced code block, the first
complete JSON value in the text. An object with a ``response`` key gives that value, and
its ``comment`` (if any) travels with it. A reply with no JSON is its trimmed text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_FENCED = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*\n(.*?)\n {0,3}\1[`~]*[ \t]*$", re.M | re.S)
_DECODER = json.JSONDecoder()
_NOT_JSON = (ValueError, RecursionError)  # json raises RecursionError for very deep nesting


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
    for match in _FENCED.finditer(text.replace("\r\n", "\n")):
        try:
            return json.loads(match.group(2))
        except _NOT_JSON:
            continue
    for index, char in enumerate(text):
        if char in "[{":
            try:
                value, _ = _DECODER.raw_decode(text, index)
            except _NOT_JSON:
                continue
            return value
    return _NOTHING
