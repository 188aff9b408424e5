"""The response cache: real SQLite files, the real SDK against the loopback Messages API."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from vaultd.edges.cache import CachedModel, ResponseCache
from vaultd.edges.model import AnthropicModel, request_params
from vaultd.errors import ModelError
from vaultd.evaluate.ask import ModelReply, ModelRequest

from .fakeapi import FakeMessagesAPI, Reply
from .test_model import in_threads

ROOT = Path(__file__).resolve().parent.parent
BASE = ModelRequest(model="claude-test", max_tokens=100, prompt="what is 2+2?",
                    context="a note about sums")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "vault" / ".vaultd" / "cache.sqlite3"


@pytest.fixture
def model(api: FakeMessagesAPI, db: Path) -> Iterator[CachedModel]:
    inner = AnthropicModel(max_retries=0)
    cached = CachedModel(inner, ResponseCache(db))
    try:
        yield cached
    finally:
        cached.close()
        inner.close()


def sent(api: FakeMessagesAPI) -> int:
    return len(api.message_requests())


def test_miss_then_hit(api: FakeMessagesAPI, model: CachedModel) -> None:
    api.rule("2+2", "four")
    first = model.complete(BASE)
    assert (first.text, first.from_cache, sent(api)) == ("four", False, 1)
    second = model.complete(BASE)
    assert (second.text, second.from_cache, sent(api)) == ("four", True, 1)
    assert dataclasses.replace(second, from_cache=False) == first
    assert (model.requests_sent, model.cache_hits) == (1, 1)
    assert model.cache.stats() == {"entries": 1, "hits": 1}


def test_key_is_canonical_json_of_the_params() -> None:
    params = request_params(BASE)
    reordered = dict(reversed(list(params.items())))
    assert ResponseCache.key_for(params) == ResponseCache.key_for(reordered)
    assert len(ResponseCache.key_for(params)) == 64
    assert ResponseCache.key_for(params) != ResponseCache.key_for({**params, "max_tokens": 101})


def test_every_param_is_part_of_the_key(api: FakeMessagesAPI, model: CachedModel) -> None:
    variants = [
        BASE,
        dataclasses.replace(BASE, model="claude-other"),
        dataclasses.replace(BASE, max_tokens=200),
        dataclasses.replace(BASE, prompt="what is 2+3?"),
        dataclasses.replace(BASE, context="another note"),
        dataclasses.replace(BASE, context=None),
        dataclasses.replace(BASE, cache_context=True),
    ]
    for n, request in enumerate(variants, start=1):
        assert not model.complete(request).from_cache
        assert sent(api) == n
    for request in variants:  # and each is stored under its own key
        assert model.complete(request).from_cache
    assert sent(api) == len(variants)
    assert model.cache.stats() == {"entries": len(variants), "hits": len(variants)}


def test_use_cache_false_always_sends_and_stores_nothing(
    api: FakeMessagesAPI, model: CachedModel
) -> None:
    uncached = dataclasses.replace(BASE, use_cache=False)
    assert not model.complete(uncached).from_cache
    assert not model.complete(uncached).from_cache
    assert sent(api) == 2
    assert model.cache.stats()["entries"] == 0
    model.complete(BASE)  # nothing was stored for it: this one sends too
    assert sent(api) == 3
    assert not model.complete(uncached).from_cache  # even with a stored reply, it sends
    assert sent(api) == 4
    assert model.requests_sent == 4


def test_truncated_and_empty_replies_are_not_stored(
    api: FakeMessagesAPI, model: CachedModel
) -> None:
    api.script([Reply(text="[1,", stop_reason="max_tokens")] * 2 + [Reply(text="")] * 2)
    for n in (1, 2):
        reply = model.complete(BASE)
        assert (reply.text, reply.stop_reason, reply.from_cache) == ("[1,", "max_tokens", False)
        assert sent(api) == n
    for n in (3, 4):
        assert model.complete(BASE).text == ""
        assert sent(api) == n
    assert model.cache.stats()["entries"] == 0


def test_a_refusal_an_older_vaultd_stored_is_asked_again(
    api: FakeMessagesAPI, model: CachedModel
) -> None:
    key = ResponseCache.key_for(request_params(BASE))
    model.cache.put(key, BASE.model, ModelReply(text="I would rather not.", stop_reason="refusal",
                                               batch=True))
    api.rule("2+2", "four")
    reply = model.complete(BASE)
    assert (reply.text, reply.from_cache, sent(api)) == ("four", False, 1)
    assert model.complete(BASE).from_cache  # the answer replaced it
    assert sent(api) == 1


def test_errors_are_not_stored(api: FakeMessagesAPI, model: CachedModel) -> None:
    api.script([Reply(status=500), "recovered"])
    with pytest.raises(ModelError, match="500"):
        model.complete(BASE)
    assert model.complete(BASE).text == "recovered"
    assert sent(api) == 2
    assert model.complete(BASE).from_cache
    assert sent(api) == 2


def test_single_flight_shares_one_reply(api: FakeMessagesAPI, model: CachedModel) -> None:
    api.rule("2+2", Reply(text="shared", delay=0.5))
    results = in_threads(8, lambda: model.complete(BASE))
    assert sent(api) == 1
    assert [r.text for r in results if isinstance(r, ModelReply)] == ["shared"] * 8
    assert sum(not r.from_cache for r in results if isinstance(r, ModelReply)) == 1
    assert (model.requests_sent, model.cache_hits) == (1, 7)
    assert model.cache.stats()["entries"] == 1


def test_single_flight_shares_one_error(api: FakeMessagesAPI, model: CachedModel) -> None:
    api.rule("2+2", Reply(status=400, text="bad prompt", delay=0.5))
    results = in_threads(8, lambda: model.complete(BASE))
    assert sent(api) == 1
    assert all(isinstance(r, ModelError) and "400" in str(r) for r in results), results
    assert model.cache.stats()["entries"] == 0
    with pytest.raises(ModelError):  # the error was not kept: the next call asks again
        model.complete(BASE)
    assert sent(api) == 2


def test_two_cache_objects_share_the_file(db: Path) -> None:
    reply = ModelReply(text="kept", input_tokens=3, output_tokens=1, stop_reason="end_turn",
                       model="claude-test")
    first, second = ResponseCache(db), ResponseCache(db)
    try:
        first.put("k", "claude-test", reply)
        assert second.get("k") == dataclasses.replace(reply, from_cache=True)
        assert first.get("k") is not None
        assert first.stats() == second.stats() == {"entries": 1, "hits": 2}
        assert first.get("other") is None
    finally:
        first.close()
        second.close()


WRITER = textwrap.dedent("""
    import logging, sys, time
    from pathlib import Path
    from vaultd.edges.cache import ResponseCache
    from vaultd.evaluate.ask import ModelReply
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    db, go, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    cache = ResponseCache(db)
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    for i in range(50):
        cache.put(f"{name}-{i}", "claude-test", ModelReply(text=f"{name} {i}" * 50))
        assert cache.get(f"{name}-{i}") is not None
    print(cache.stats()["entries"], flush=True)
    cache.close()
""")


def test_two_processes_write_at_once(db: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(go), name],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for name in ("a", "b")
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        go.touch()
        outcomes = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for proc, (_, err) in zip(procs, outcomes, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err and "failed" not in err, err
    cache = ResponseCache(db)
    try:
        assert cache.stats() == {"entries": 100, "hits": 100}
        got = cache.get("b-49")
        assert got is not None and got.text == "b 49" * 50
    finally:
        cache.close()


def test_corrupt_file_is_moved_aside(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    db.parent.mkdir(parents=True)
    garbage = b"this is not a database\x00" * 200
    db.write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="vaultd.cache"):
        cache = ResponseCache(db)
    try:
        assert cache.stats() == {"entries": 0, "hits": 0}
        aside = list(db.parent.glob("cache.sqlite3.corrupt-*"))
        assert [p.read_bytes() for p in aside] == [garbage]
        assert "moved it aside" in caplog.text
        cache.put("k", "claude-test", ModelReply(text="fresh"))
        got = cache.get("k")
        assert got is not None and got.text == "fresh"
    finally:
        cache.close()


def test_errors_after_open_are_misses_logged_once(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ResponseCache(db)
    try:
        cache.put("k", "claude-test", ModelReply(text="stored"))
        other = ResponseCache(db)
        assert other._conn is not None
        other._conn.execute("DROP TABLE responses")  # pulled from under the first
        other.close()
        with caplog.at_level(logging.WARNING, logger="vaultd.cache"):
            assert cache.get("k") is None
            cache.put("k", "claude-test", ModelReply(text="again"))
            assert cache.get("k") is None
        assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    finally:
        cache.close()
    assert cache.get("k") is None  # closed: a miss, not an error
    cache.put("k", "claude-test", ModelReply(text="no-op"))


def test_private_files_and_no_api_key(api: FakeMessagesAPI, model: CachedModel, db: Path) -> None:
    api.rule("2+2", "four")
    model.complete(BASE)
    assert api.message_requests()[0].api_key == "test-key"
    assert db.stat().st_mode & 0o777 == 0o600
    assert db.parent.stat().st_mode & 0o777 == 0o700
    files = list(db.parent.glob("cache.sqlite3*"))
    assert db in files
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o600, path
        assert b"test-key" not in path.read_bytes(), path
    assert b"four" in b"".join(p.read_bytes() for p in files)  # the reply itself is there
