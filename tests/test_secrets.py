"""The API key never lands anywhere vaultd writes, and vaultd's own folder is the owner's.

A distinctive key goes through the real SDK to the loopback API, with a daemon logging at
DEBUG (and the SDK's own debug log on); then every byte vaultd left behind is searched.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
from pathlib import Path

import pytest

from .conftest import run_cli, run_process
from .daemonproc import DaemonProcess, note_says, wait_for
from .fakeapi import FakeMessagesAPI, Reply
from .notes import SEED, SEED_REPLIES, note_with_measures

KEY = "sk-ant-api03-VAULTDTESTSECRET-" + secrets.token_hex(16)


def everything_under(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def assert_no_key(data: bytes, where: object) -> None:
    for form in (KEY, KEY[12:]):  # the whole key, and its tail without the prefix
        assert form.encode() not in data, f"the API key is in {where}"


def sandbox_workers(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"vaultd.edges._sandbox_child" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
    return found


@pytest.fixture
def keyed(api: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch) -> FakeMessagesAPI:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_LOG", "debug")  # the SDK's own debug log, on stderr
    for contains, reply in SEED_REPLIES.items():
        api.rule(contains, reply)
    # a misbehaving server (or proxy) that quotes the key back in its error
    api.rule("ECHO", Reply(status=400, text=f"header x-api-key: {KEY} is not allowed here"))
    api.rule("REFUSE", Reply(status=403, text=f"key {KEY} may not use this model"))
    return api


def test_the_key_is_in_no_note_log_cache_journal_or_state_file(
    vault: Path, tmp_path: Path, keyed: FakeMessagesAPI
) -> None:
    (vault / ".vaultd").mkdir(mode=0o755)  # as a user makes it, for a config.toml
    (vault / ".vaultd").chmod(0o755)
    (vault / ".vaultd" / "config.toml").write_text("workers = 2\n", encoding="utf-8")
    seed = vault / "seed.md"
    seed.write_text(SEED, encoding="utf-8")
    echo = vault / "echo.md"
    echo.write_text(note_with_measures([
        "* ---", "  * id: echo", "  * type: ai", "  * prompt: ECHO",
        "* ---", "  * id: refuse", "  * type: ai", "  * prompt: REFUSE",
    ]), encoding="utf-8")
    with DaemonProcess(vault, "--settle", "0.1", log_level="DEBUG") as proc:
        proc.wait_ready()
        wait_for(note_says(seed, "Status: Done"), what="the seed done")
        wait_for(note_says(echo, "Status: Error"), what="the echo note done")
        wait_for(lambda: (vault / ".vaultd" / "daemon.json").exists(), what="daemon.json")
        workers = sandbox_workers(proc.proc.pid)
        assert workers  # the seed's programmatic measures ran in them
        for pid in workers:  # a worker has no use for the key: it does not hold it
            assert_no_key(Path(f"/proc/{pid}/environ").read_bytes(), f"worker {pid}'s environment")
        assert proc.stop() == 0
        log = proc.log()
    assert all(r.api_key == KEY for r in keyed.message_requests())  # it was really used
    assert "DEBUG" in log and "anthropic" in log  # and the logs really were verbose
    assert_no_key(log.encode(), "the daemon's log")
    text = echo.read_text(encoding="utf-8")
    assert "> Error: model API error 400: header x-api-key: [API key] is not allowed here\n" \
        in text
    assert "> Error: model API error 403: key [API key] may not use this model\n" in text

    # a crash right after journaling leaves an entry behind to look into, too
    echo.write_text(echo.read_text(encoding="utf-8").replace("Status: Error", "Status: Pending"),
                    encoding="utf-8")
    crashed = run_process("run", str(vault), "--once", env={"VAULTD_CRASH_AT": "after_journal"})
    assert crashed.code == 70, crashed
    assert_no_key((crashed.out + crashed.err).encode(), "the one-shot run's output")
    [entry] = [e for e in (vault / ".vaultd" / "journal").iterdir() if e.stat().st_size]
    doc = json.loads(entry.read_bytes())
    for field in ("old", "new"):
        assert_no_key(base64.b64decode(doc[field]), f"the journal entry's {field} text")

    left = everything_under(vault)
    assert vault / ".vaultd" / "cache.sqlite3" in left and vault / ".vaultd" / "daemon.json" in left
    for path, data in left.items():
        assert_no_key(data, path)


def test_everything_vaultd_keeps_is_the_owners_alone(
    vault: Path, keyed: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    old_umask = os.umask(0o022)  # a usual umask: new files 0644, folders 0755
    try:
        (vault / ".vaultd").mkdir(mode=0o755)
        (vault / ".vaultd" / "journal").mkdir(mode=0o755)
        (vault / ".vaultd" / "config.toml").write_text("workers = 2\n", encoding="utf-8")
        (vault / "seed.md").write_text(SEED, encoding="utf-8")
        with DaemonProcess(vault, "--settle", "0.1") as proc:
            proc.wait_ready()
            wait_for(note_says(vault / "seed.md", "Status: Done"), what="the seed done")
            wait_for(lambda: (vault / ".vaultd" / "daemon.json").exists(), what="daemon.json")
            made = {p.relative_to(vault) for p in (vault / ".vaultd").rglob("*")}
            assert proc.stop() == 0
        assert run_cli("status", str(vault), capsys=capsys).code == 0
    finally:
        os.umask(old_umask)
    assert {Path(".vaultd/cache.sqlite3"), Path(".vaultd/daemon.json"),
            Path(".vaultd/journal")} <= made
    for path in [vault / ".vaultd", *(vault / ".vaultd").rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.name == "config.toml":  # the user's own file, in a folder only they can open
            assert mode == 0o644
            continue
        expected = 0o700 if path.is_dir() else 0o600
        assert mode == expected, f"{path}: {oct(mode)}"


def test_a_key_with_a_line_break_is_refused_before_it_is_sent(
    vault: Path, api: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    """httpx refuses such a header and quotes it whole in its error: the key would have been
    in the note, the Error property and the log."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY + "\n")
    (vault / "seed.md").write_text(SEED, encoding="utf-8")
    ran = run_cli("run", str(vault), "--once", capsys=capsys)
    assert ran.code == 1
    why = ("the key in ANTHROPIC_API_KEY has a space, a line break or another control "
           "character in it: remove it")
    assert ran.err.splitlines()[0].startswith(f"vaultd: {why}: notes that ask the model wait")
    text = (vault / "seed.md").read_text(encoding="utf-8")
    assert text == SEED  # it waits, untouched
    assert f"waiting    seed.md: {why}" in ran.out
    assert api.requests == []
    for data in ((ran.out + ran.err).encode(), text.encode()):
        assert_no_key(data, "the output or the note")


def test_an_echoed_key_is_redacted_in_batch_errors_too(
    vault: Path, keyed: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VAULTD_BATCH_POLL", "0.1")
    echo = vault / "echo.md"
    echo.write_text(note_with_measures(["* ---", "  * id: echo", "  * type: ai",
                                        "  * prompt: ECHO"]), encoding="utf-8")
    ran = run_cli("run", str(vault), "--once", "--batch", capsys=capsys)
    assert ran.code == 1
    text = echo.read_text(encoding="utf-8")
    assert "[API key]" in text
    for data in ((ran.out + ran.err).encode(), text.encode()):
        assert_no_key(data, "the output or the note")


def test_vaultd_init_makes_its_folder_and_config_private(
    vault: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old_umask = os.umask(0o022)
    try:
        assert run_cli("init", str(vault), capsys=capsys).code == 0
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((vault / ".vaultd").stat().st_mode) == 0o700
    assert stat.S_IMODE((vault / ".vaultd" / "config.toml").stat().st_mode) == 0o600
    template = next(vault.rglob("vaultd question.md"))  # a note: the user's usual mode
    assert stat.S_IMODE(template.stat().st_mode) == 0o644
