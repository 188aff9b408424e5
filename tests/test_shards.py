"""A --once run dealt out to several processes gives what one process gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaultd.config import Settings
from vaultd.runs import shards

from .conftest import run_cli, without_timestamp
from .fakeapi import FakeMessagesAPI, Reply
from .notes import SEED, SEED_REPLIES, note_with_measures, programmatic_note
from .test_engine import seed_done


def test_notes_about_the_same_thing_are_dealt_to_the_same_process(tmp_path: Path) -> None:
    paths = []
    for number in range(40):
        path = tmp_path / f"n{number}.md"
        answer = f"Answer {number % 5}."  # five topics, eight notes each
        path.write_text(f"> [!answer]\n> ```answer-text\n> {answer}\n> ```\n", encoding="utf-8")
        paths.append(path)
    groups = shards.deal(paths, 3)
    assert sorted(p for group in groups for p in group) == sorted(paths)
    for group in groups:
        topics = {shards.topic(p) for p in group}
        for other in groups:
            if other is not group:
                assert topics.isdisjoint({shards.topic(p) for p in other})


def test_the_deal_is_as_even_as_the_topics_allow(tmp_path: Path) -> None:
    topics = {tmp_path / f"n{i}.md": f"topic {i % 7 if i < 14 else i}".encode()
              for i in range(41)}  # seven topics of two notes, then 27 of one
    groups = shards.deal(list(topics), 3, topics.__getitem__)
    assert sorted(len(g) for g in groups) == [13, 14, 14]


def test_an_empty_answer_is_dealt_by_its_query(tmp_path: Path) -> None:
    first, second = tmp_path / "a.md", tmp_path / "b.md"
    for path in (first, second):
        path.write_text("> [!query]\n> ```query-text\n> Which drugs?\n> ```\n\n"
                        "> [!answer]\n> ```answer-text\n> ```\n", encoding="utf-8")
    assert shards.topic(first) == shards.topic(second)
    assert b"Which drugs?" in shards.topic(first)


def test_the_topic_is_read_as_the_run_reads_the_note(tmp_path: Path) -> None:
    """A flashcard's ``[!answer]`` (no answer-text block) and a quoted one inside a code
    fence are the user's text: both notes ask the model the same query."""
    first, second = tmp_path / "a.md", tmp_path / "b.md"
    query = "> [!query]\n> ```query-text\n> Which drugs?\n> ```\n\n"
    first.write_text("> [!answer]- Reveal\n> Card one.\n\n" + query, encoding="utf-8")
    second.write_text("```\n> [!answer]\n> ```answer-text\n> Not one.\n```\n\n" + query,
                      encoding="utf-8")
    assert shards.topic(first) == shards.topic(second) == b"Which drugs?"
    assert shards.topic(tmp_path / "missing.md") == b""


@pytest.mark.parametrize(("total", "processes", "expected"),
                         [(8, 2, [4, 4]), (9, 2, [5, 4]), (16, 3, [6, 5, 5])])
def test_the_model_limit_is_shared_out_exactly(total: int, processes: int,
                                               expected: list[int]) -> None:
    assert shards.shares(total, processes) == expected


def test_how_many_processes() -> None:
    auto = Settings()
    assert shards.processes_for(auto, 50, batch=False) == 1  # too few notes to be worth it
    assert shards.processes_for(Settings(processes=2), 1000, batch=True) == 1
    assert shards.processes_for(Settings(processes=3), 2, batch=False) == 2  # no idle process
    assert shards.processes_for(Settings(processes=4, concurrency=2), 1000, batch=False) == 2


def test_a_run_in_three_processes(vault: Path, api: FakeMessagesAPI,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    for contains, reply in SEED_REPLIES.items():
        api.rule(contains, Reply(text=reply, delay=0.2))
    for number in range(4):
        (vault / f"seed{number}.md").write_text(SEED, encoding="utf-8")  # one topic
    for number in range(6):
        (vault / f"js{number}.md").write_text(
            programmatic_note(answer=f"Poteligeo, answer {number}."), encoding="utf-8")
    (vault / "broken.md").write_text(programmatic_note(logic="return input.nope.nope;"),
                                     encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", "--processes", "3", "--concurrency", "3",
                  capsys=capsys)

    assert ran.code == 1, ran  # broken.md ended in error
    lines = ran.out.splitlines()
    assert sorted(lines[:-2]) == sorted(
        [f"done       seed{n}.md: 4 measures" for n in range(4)]
        + [f"done       js{n}.md: 1 measures" for n in range(6)]
        + ["error      broken.md: 1 of 1 measures did not succeed; size: TypeError: "
           "cannot read property 'nope' of undefined"])
    assert lines[-2] == "vaultd: 11 notes processed: 10 done, 1 error"
    assert lines[-1].startswith("vaultd: model: 2 requests (6 from cache), ")
    assert len(api.message_requests()) == 2  # the four copies were in one process
    assert api.max_in_flight <= 3
    for number in range(4):
        text = (vault / f"seed{number}.md").read_text(encoding="utf-8")
        assert without_timestamp(text) == seed_done()
    assert "Status: Done" in (vault / "js5.md").read_text(encoding="utf-8")


def test_a_flag_that_overrides_a_bad_config_setting_reaches_every_process(
        vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]) -> None:
    """The flag wins over config.toml in the run's settings; a child must not load the
    config again on its own (and fail on the value the flag replaced)."""
    (vault / ".vaultd").mkdir()
    (vault / ".vaultd" / "config.toml").write_text("concurrency = 0\n", encoding="utf-8")
    for number in range(4):
        (vault / f"js{number}.md").write_text(
            programmatic_note(answer=f"Answer {number}."), encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", "--processes", "2", "--concurrency", "2",
                  capsys=capsys)

    assert ran.code == 0, ran
    assert sorted(ran.out.splitlines()[:-1]) == sorted(
        f"done       js{n}.md: 1 measures" for n in range(4))
    assert "configuration error" not in ran.err
    for number in range(4):
        assert "Status: Done" in (vault / f"js{number}.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("processes", ["1", "2"])
def test_the_log_level_reaches_every_process(vault: Path, api: FakeMessagesAPI,
                                             processes: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """--log-level ERROR: the journal recovery each process does at start logs nothing."""
    from .test_writer import NEW, OLD, crash_write

    other = vault / "other.md"
    other.write_bytes(OLD)
    crash_write(vault, other, OLD, NEW, "mid_write")
    for number in range(2):
        (vault / f"js{number}.md").write_text(
            programmatic_note(answer=f"Answer {number}."), encoding="utf-8")

    ran = run_cli("--log-level", "ERROR", "run", str(vault), "--once", "--processes",
                  processes, capsys=capsys)

    assert ran.code == 0, ran
    assert other.read_bytes() == NEW
    assert "journal:" not in ran.err, ran.err


def test_the_same_answer_under_another_callout_header_is_asked_about_once(
        vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]) -> None:
    """`[!Answer]` and a folded `[!answer]-` are the same answer callout to vaultd (its
    kind is read case-blind; title and fold sign are not the answer), so they send the
    same requests: they must be dealt to the same process."""
    for contains, reply in SEED_REPLIES.items():
        api.rule(contains, Reply(text=reply, delay=0.3))
    for name, header in (("plain", "> [!answer]"), ("capital", "> [!Answer]"),
                         ("folded", "> [!answer]- The answer")):
        (vault / f"{name}.md").write_text(SEED.replace("> [!answer]", header, 1),
                                          encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", "--processes", "2", capsys=capsys)

    assert ran.code == 0, ran
    assert ran.out.splitlines()[-2] == "vaultd: 3 notes processed: 3 done"
    assert len(api.message_requests()) == 2, ran  # once, as in one process


def test_a_process_with_every_note_gets_the_whole_model_limit(
        vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]) -> None:
    """Every note asks about one answer, so every note goes to one process: the limit is
    shared among the processes that run, not left idle on one that gets no notes."""
    api.default = Reply(text='"ok"', delay=1.0)
    for number in range(5):  # the first request about the answer goes alone (it is cached)
        lines = ["* ---", "  * id: a", "  * type: ai", f"  * prompt: question {number}"]
        (vault / f"n{number}.md").write_text(
            note_with_measures(lines, answer="One answer."), encoding="utf-8")

    ran = run_cli("run", str(vault), "--once", "--processes", "2", "--concurrency", "4",
                  capsys=capsys)

    assert ran.code == 0, ran
    assert ran.out.splitlines()[-2] == "vaultd: 5 notes processed: 5 done"
    assert len(api.message_requests()) == 5
    assert api.max_in_flight == 4  # as in one process: reached, never exceeded
