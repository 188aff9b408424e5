"""Hardening of the model side: replies of any size and shape, slow replies, no key or a
refused one, a key echoed back, redirects.

Every test talks to the loopback Messages API through the real SDK, or runs a real daemon.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from vaultd.reply import read_reply

from .conftest import run_cli
from .fakeapi import FakeMessagesAPI, Reply, Request
from .notes import note_with_measures
from .test_model import free_port

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


# -- a key echoed back in a 200 reply is never stored (issue 12, item 15) --------------------

ECHO_KEY = "sk-ant-api03-ECHOEDBACK-" + secrets.token_hex(16)


def echo_headers(request: Request) -> str:
    """A misbehaving endpoint: it answers with the request's credentials in the text (a
    batch's items have no headers of their own: the batch's are the ones sent)."""
    if request.custom_id is not None:
        return f'{{"response": "authorization=Bearer {ECHO_KEY}"}}'
    return (f'{{"response": "x-api-key={request.headers.get("x-api-key")} '
            f'authorization={request.headers.get("authorization")}"}}')


@pytest.mark.parametrize("header", ["x-api-key", "authorization", "batch"])
def test_a_key_echoed_in_a_reply_is_in_no_file_of_the_vault(
    vault: Path, api: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], header: str,
) -> None:
    if header == "authorization":  # a token goes as `Authorization: Bearer ...`
        monkeypatch.delenv("ANTHROPIC_API_KEY")
        monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", ECHO_KEY)
    else:
        monkeypatch.setenv("ANTHROPIC_API_KEY", ECHO_KEY)
    api.responder = echo_headers
    measured = vault / "measured.md"
    measured.write_text(note_with_measures(
        ["* ---", "  * id: echo", "  * type: ai", "  * prompt: Say it"]), encoding="utf-8")
    asked = vault / "asked.md"
    asked.write_text("---\nStatus: Pending\n---\n\n> [!query]\n> ```query-text\n> Who?\n> ```\n\n"
                     "> [!measures]\n> ```measures-md\n> * ---\n>   * id: n\n"
                     ">   * type: programmatic\n>   * logic: return input.length\n> ```\n",
                     encoding="utf-8")

    monkeypatch.setenv("VAULTD_BATCH_POLL", "0.05")
    ran = run_cli("run", str(vault), "--once", *(["--batch"] if header == "batch" else []),
                  capsys=capsys)

    assert ran.code == 0, ran
    assert all(r.api_key == ECHO_KEY for r in api.requests)  # it was sent
    assert "\neval_echo: " in measured.read_text(encoding="utf-8")
    assert "[API key]" in measured.read_text(encoding="utf-8")
    assert "[API key]" in asked.read_text(encoding="utf-8")  # the generated answer
    files = [p for p in vault.rglob("*") if p.is_file()]
    assert vault / ".vaultd" / "cache.sqlite3" in files
    for path in files:
        data = path.read_bytes()
        for form in (ECHO_KEY, ECHO_KEY[12:]):
            assert form.encode() not in data, f"the key is in {path}"
    assert ECHO_KEY not in ran.out + ran.err


# -- a redirect to a closed port names the address that refused (issue 12, item 16) ---------


def test_a_redirect_to_a_closed_port_names_the_address_that_refused(
    vault: Path, api: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1/messages"
    api.default = Reply(status=307, headers={"location": closed})
    monkeypatch.setenv("VAULTD_MODEL_RETRIES", "0")
    note = vault / "n.md"
    note.write_text(note_with_measures(["* ---", "  * id: a", "  * type: ai", "  * prompt: A"]),
                    encoding="utf-8")
    ran = run_cli("run", str(vault), "--once", capsys=capsys)
    assert ran.code == 1
    assert (f"cannot reach the model API at {api.url}: it redirected to {closed}: "
            "connection refused") in ran.out + ran.err + note.read_text(encoding="utf-8")
