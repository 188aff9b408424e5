"""Hardening of the model side: replies of any size and shape, slow replies, no key or a
refused one, a key echoed back, redirects.

Every test talks to the loopback Messages API through the real SDK, or runs a real daemon.
"""

from __future__ import annotations

import secrets
import signal
from pathlib import Path

import pytest

from vaultd.edges.model import AnthropicModel
from vaultd.errors import ModelError, ModelUnavailable
from vaultd.evaluate.reply import read_reply

from .conftest import run_cli
from .daemonproc import DaemonProcess, note_says, wait_for
from .fakeapi import FakeMessagesAPI, Reply, Request
from .notes import SEED, SEED_REPLIES, note_with_measures, programmatic_note
from .test_model import PARAMS, free_port

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


# -- no key, a refused key, no connection: not the note's failure (issue 11 item 7, 12 item 13)

MIXED = note_with_measures([  # ai and programmatic measures, no results yet
    "* ---", "  * id: names", "  * type: ai", "  * prompt: BRAND NAMES",
    "* ---", "  * id: size", "  * type: programmatic", "  * logic: return input.length",
])


def identity(path: Path) -> tuple[bytes, int, int]:
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns, st.st_ino


def three_notes(vault: Path) -> dict[str, Path]:
    notes = {"seed.md": vault / "seed.md", "mixed.md": vault / "mixed.md",
             "js.md": vault / "js.md"}
    notes["seed.md"].write_text(SEED, encoding="utf-8")  # results of an earlier run
    notes["mixed.md"].write_text(MIXED, encoding="utf-8")
    notes["js.md"].write_text(programmatic_note(), encoding="utf-8")
    return notes


def break_the_model(fault: str, api: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch) -> str:
    """No key, a revoked key or no API to connect to; what a note waiting for it says."""
    if fault == "no key":
        monkeypatch.delenv("ANTHROPIC_API_KEY")
        return "no API key (set ANTHROPIC_API_KEY)"
    if fault == "401":
        api.accepted_keys = {"the-new-key"}  # the one in the environment was revoked
        return "the API key was refused (401): invalid x-api-key"
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
    monkeypatch.setenv("VAULTD_MODEL_RETRIES", "1")
    return f"cannot reach the model API at {url}: connection refused"


@pytest.mark.parametrize("fault", ["no key", "401", "connection refused"])
def test_a_failure_that_is_not_the_note_s_changes_no_byte_of_it(
    vault: Path, api: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], fault: str,
) -> None:
    notes = three_notes(vault)
    why = break_the_model(fault, api, monkeypatch) + (
        " — gave up after 2 attempts" if fault == "connection refused" else "")
    before = {name: identity(path) for name, path in notes.items() if name != "js.md"}

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 1
    for name, was in before.items():  # not a byte, not the mtime, not the inode
        assert identity(notes[name]) == was, name
        assert f"waiting    {name}: {why}\n" in ran.out
    js = notes["js.md"].read_text(encoding="utf-8")
    assert "Status: Done" in js and "> 23\n> ```" in js
    assert ran.out.splitlines()[-1] == "vaultd: 3 notes processed: 1 done, 2 waiting"
    assert len(api.message_requests()) == (1 if fault == "401" else 0)  # once, not per note
    if fault == "no key":
        assert ran.err.count(why) == 1


@pytest.mark.parametrize("fault", ["401", "connection refused"])
def test_with_batch_too_a_failure_that_is_not_the_note_s_changes_no_byte_of_it(
    vault: Path, api: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], fault: str,
) -> None:
    notes = three_notes(vault)
    why = break_the_model(fault, api, monkeypatch)
    before = {name: identity(path) for name, path in notes.items() if name != "js.md"}

    ran = run_cli("run", str(vault), "--once", "--batch", capsys=capsys)

    assert ran.code == 1
    for name, was in before.items():  # the seed's results too: not a byte changed
        assert identity(notes[name]) == was, name
        assert f"waiting    {name}: {why}" in ran.out
    assert "Status: Done" in notes["js.md"].read_text(encoding="utf-8")
    assert ran.out.splitlines()[-1] == "vaultd: 3 notes processed: 1 done, 2 waiting"
    assert api.batch_requests() == [] and api.message_requests() == []


def write_env_file(home: Path, key: str) -> None:
    folder = home / ".config" / "vaultd"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "env").write_text(f"# the service's key\nANTHROPIC_API_KEY='{key}'\n",
                                encoding="utf-8")


@pytest.mark.parametrize("start", ["revoked", "missing"])
def test_a_refused_or_missing_key_waits_in_the_daemon_until_sighup_reads_the_new_one(
    vault: Path, api: FakeMessagesAPI, tmp_path: Path, start: str,
) -> None:
    home = tmp_path / "home"
    env = {"HOME": str(home)}
    if start == "revoked":
        write_env_file(home, "sk-old-revoked-key")
        env["ANTHROPIC_API_KEY"] = "sk-old-revoked-key"
        said = "the API key was refused (401): invalid x-api-key"
    else:  # no key at all, and no env file yet
        env["ANTHROPIC_API_KEY"] = ""
        said = "no API key (set ANTHROPIC_API_KEY)"
    api.accepted_keys = {"sk-new-good-key"}
    for contains, reply in SEED_REPLIES.items():
        api.rule(contains, reply)
    seed = vault / "seed.md"
    seed.write_text(SEED, encoding="utf-8")
    mixed = vault / "mixed.md"
    mixed.write_text(MIXED, encoding="utf-8")
    with DaemonProcess(vault, "--settle", "0.1", env=env) as proc:
        proc.wait_ready()
        wait_for(lambda: f"{said}: notes that ask the model wait" in proc.log(),
                 what="the reason said")
        marker = vault / "marker.md"  # proof that both were looked at: a note after them
        marker.write_text(programmatic_note(), encoding="utf-8")
        wait_for(note_says(marker, "Status: Done"), what="the marker done")
        late = vault / "late.md"  # asks the model while it cannot be asked: no request
        late.write_text(MIXED, encoding="utf-8")
        marker2 = vault / "marker2.md"
        marker2.write_text(programmatic_note(), encoding="utf-8")
        wait_for(note_says(marker2, "Status: Done"), what="the second marker done")
        assert seed.read_text(encoding="utf-8") == SEED
        assert mixed.read_text(encoding="utf-8") == MIXED
        assert late.read_text(encoding="utf-8") == MIXED
        before = 1 if start == "revoked" else 0
        assert len(api.message_requests()) == before  # one refusal at most, then none
        assert proc.log().count(said) == 1  # said once, not once per note

        write_env_file(home, "sk-new-good-key")
        proc.proc.send_signal(signal.SIGHUP)
        wait_for(note_says(seed, "Status: Done"), what="the seed note run with the new key")
        wait_for(note_says(mixed, "Status: Done"), what="the mixed note run")
        wait_for(note_says(late, "Status: Done"), what="the late note run")
        assert proc.stop() == 0
        assert "Traceback" not in proc.log()
    assert {r.api_key for r in api.message_requests()[before:]} == {"sk-new-good-key"}


def test_a_refused_key_is_tried_again_after_the_back_off(
    api: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-not-yet-good")
    api.accepted_keys = set()
    model = AnthropicModel(outage_backoff=0.3, outage_cap=0.6)
    try:
        with pytest.raises(ModelUnavailable, match=r"\(401\)"):
            model.send(PARAMS)
        with pytest.raises(ModelUnavailable, match=r"\(401\)"):  # at once, without a request
            model.send(PARAMS)
        assert len(api.message_requests()) == 1
        assert model.unavailable() is not None
        api.accepted_keys = None  # the key is good again (re-enabled on the console)
        wait_for(lambda: model.unavailable() is None, timeout=30, what="the back-off over")
        assert model.send(PARAMS).text == "ok"
        assert len(api.message_requests()) == 2
    finally:
        model.close()


# -- model_timeout is a deadline for the whole request (issue 12, item 8) --------------------


@pytest.mark.timeout(120)
def test_a_reply_that_trickles_in_ends_at_the_deadline(api: FakeMessagesAPI) -> None:
    api.default = Reply(text="a long answer " * 100, trickle=0.2)  # a byte every 0.2 s
    model = AnthropicModel(timeout=1.5, max_retries=1)
    try:
        with pytest.raises(ModelError) as caught:
            model.send(PARAMS)
    finally:
        model.close()
    assert str(caught.value) == ("the model API did not answer within 1.5 s — gave up after "
                                 "2 attempts")
    assert len(api.message_requests()) == 2


def test_a_trickling_first_request_holds_no_other_note(vault: Path, api: FakeMessagesAPI) -> None:
    """The daemon's first request (the one that finds out whether the key is good) trickles:
    another note's request goes out beside it and its note is done, while the first is still
    coming in; then the first ends at its deadline."""
    api.rule("TRICKLE", Reply(text="late " * 1000, trickle=0.2))
    api.rule("FAST", '"quick"')
    slow = vault / "slow.md"
    slow.write_text(note_with_measures(["* ---", "  * id: t", "  * type: ai",
                                        "  * prompt: TRICKLE"]), encoding="utf-8")
    with DaemonProcess(vault, "--settle", "0.1",
                       env={"VAULTD_MODEL_TIMEOUT": "20", "VAULTD_MODEL_RETRIES": "0"}) as proc:
        proc.wait_ready()
        assert api.wait_for_requests(1, timeout=60)  # the slow note's request is on its way
        fast = vault / "fast.md"
        fast.write_text(note_with_measures(["* ---", "  * id: f", "  * type: ai",
                                            "  * prompt: FAST"]), encoding="utf-8")
        wait_for(note_says(fast, "Status: Done", "> quick\n> ```"), what="the fast note done")
        assert "Status: Processing" in slow.read_text(encoding="utf-8")  # still coming in
        wait_for(note_says(slow, "Status: Error",
                           "> Error: the model API did not answer within 20 s\n"),
                 what="the slow note ended at its deadline")
        assert proc.stop() == 0
