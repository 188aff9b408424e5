"""Hardening of the model side: replies of any size and shape, slow replies, no key or a
refused one, a key echoed back, redirects.

Every test talks to the loopback Messages API through the real SDK, or runs a real daemon.
"""

from __future__ import annotations

import pytest

from vaultd.reply import read_reply

# -- the reply parser is linear (issue 12, item 9) -------------------------------------------

FIVE_MB = 5_000_000


@pytest.mark.timeout(120)  # generous: only a parser that is not linear takes longer
@pytest.mark.parametrize("shape", [
    "{[" * (FIVE_MB // 2),  # openings that never close
    "```json\n{\n" * (FIVE_MB // 10),  # fences that never close, each with an opening
    "```\n[1,\n```\n" * (FIVE_MB // 12),  # many fences, none of them JSON
    "[" * 300 + "1, " * (FIVE_MB // 3 - 400) + "x" + "]" * 300,  # deep, wrong at the end
    '{"a": [' + '"x", ' * (FIVE_MB // 5) + "oops",  # a long value cut off
    "{" + "[]" * (FIVE_MB // 2),  # many small values inside one that never closes
], ids=["openings", "open-fences", "fences", "deep", "cut-off", "small-values"])
def test_a_5_mb_reply_of_the_worst_shape_is_read(shape: str) -> None:
    reading = read_reply(shape)
    if shape.startswith("{[]"):
        assert reading.value == []
    else:
        assert reading.value == shape.strip()


@pytest.mark.timeout(120)
def test_a_5_mb_reply_with_the_value_at_its_end() -> None:
    reply = "{ [ " * (FIVE_MB // 8) + 'so: {"response": 7, "comment": "late"}'
    reading = read_reply(reply)
    assert (reading.value, reading.comment) == (7, "late")
