"""Notes as real vaults have them, nobody here wrote: task notes with ``status: pending``,
flashcards, a ``status`` typed as a list, broken frontmatter, a product note with a
``model`` property, a Dataview ``Status:: Pending``. vaultd acts on its own notes only:
pending, and holding vaultd's parts (issue 11, items 1-5 and 8).

Every note that is not vaultd's keeps its bytes, its mtime and its inode, through
``vaultd run --once`` and through the daemon at start-up; a marker note vaultd runs after
them is the proof the daemon has been past them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import Ran, run_cli, run_process, without_timestamp
from .daemonproc import DaemonProcess, note_says, wait_for
from .fakeapi import FakeMessagesAPI

ANSWER = "> [!answer]\n> ```answer-text\n> Poteligeo is an option.\n> ```\n"
MEASURES = ("> [!measures]\n> ```measures-md\n> * ---\n>   * id: size\n"
            ">   * type: programmatic\n>   * logic: 'return input.length;'\n> ```\n")
PARTS = f"{ANSWER}\n{MEASURES}"  # vaultd's parts: an answer and a measure (23 characters)
RESULT = ("\n***\n\n> [!evaluation]\n> ```evaluation-yaml\n> - measure: \"size\"\n"
          ">   type: programmatic\n> ```\n\n> [!evaluation-result]\n"
          "> ```evaluation-result-text\n> 23\n> ```\n")
PROPS = "eval_size: 23\nvaultd_properties:\n  - eval_size\n"  # the result, as a property
MARKER = f"---\nStatus: Pending\n---\n{PARTS}"
MARKER_DONE = f"---\nStatus: Done\n{PROPS}---\n{PARTS}{RESULT}"
OLD = 1_000_000_000  # 2001: a rewrite, even to the same bytes, would move the mtime

# Notes that are not vaultd's: whatever their Status says, vaultd never writes them.
PERSONS = {
    "task.md": "---\nstatus: pending\ndue: 2024-05-01\ntags: [work]\n---\n\n"
               "- [ ] Call the plumber\n- [ ] Buy paint\n",
    "Projects/launch.md": "---\nStatus: Pending\nowner: Ana\n---\n# Launch\n\n"
                          "> [!answer]\n> The plan is agreed; see [[Roadmap]].\n",
    "flashcard.md": "---\nstatus: pending\ntags: [flashcards]\n---\n\n"
                    "What is the capital of France?\n\n> [!answer]- Reveal answer\n> Paris\n",
    "flashcard-measures.md": "---\nStatus: Pending\n---\nQ: 2 + 2?\n\n"
                             "> [!answer]- Reveal answer\n> 4\n\n" + MEASURES,
    "product.md": "---\nstatus: pending\nmodel: M1 Pro\nbrand: Apple\n---\n# MacBook Pro\n\n"
                  "> [!query]\n> Is 16 GB enough?\n",
    "broken-task.md": "---\ntitle: foo: bar\nstatus: pending\n---\n- [ ] fix the title\n",
    "listed-task.md": "---\nstatus:\n  - pending\n---\n- [ ] a task in a typed vault\n",
    "processing-task.md": "---\nstatus: processing\n---\n- [x] half done\n",
    # vaultd's parts, but not pending: the near misses (check says how; a run leaves them)
    "dataview.md": f"Status:: Pending\n\n{PARTS}",
    "dataview-fm.md": f"---\ntags: [eval]\n---\n[status:: pending]\n\n{PARTS}",
    "outside.md": f"\n---\nStatus: Pending\n---\n{PARTS}",
    "no-frontmatter.md": f"Status: Pending\n\n{PARTS}",
}


def _write_old(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    os.utime(path, (OLD, OLD))


def _state(path: Path) -> tuple[bytes, int, int]:
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns, st.st_ino


DONE = ("Status: Done", "> 23\n> ```")
Runner = Callable[[Path, pytest.CaptureFixture[str], dict[Path, tuple[str, ...]]], Ran]


def _once(vault: Path, capsys: pytest.CaptureFixture[str],
          waits: dict[Path, tuple[str, ...]]) -> Ran:
    return run_cli("run", str(vault), "--once", capsys=capsys)


def _daemon(vault: Path, capsys: pytest.CaptureFixture[str],
            waits: dict[Path, tuple[str, ...]]) -> Ran:
    """The daemon at start-up: the notes are there before it starts; ``waits`` says what
    the notes it runs will say, and a marker written once it is ready, and done, is the
    proof it has been past the rest."""
    with DaemonProcess(vault, "--settle", "0.1") as proc:
        proc.wait_ready()
        marker = vault / "zz-after.md"
        marker.write_text(MARKER, encoding="utf-8")
        for path, needles in {**waits, marker: DONE}.items():
            wait_for(note_says(path, *needles), what=f"{path.name}: {needles}")
        assert proc.stop() == 0
        marker.unlink()
        return Ran(0, "", proc.log())


@pytest.fixture(params=["once", "daemon"])
def runner(request: pytest.FixtureRequest, api: FakeMessagesAPI) -> Runner:
    return _once if request.param == "once" else _daemon


def test_a_person_s_notes_keep_bytes_mtime_and_inode(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str],
    runner: Runner,
) -> None:
    for name, text in PERSONS.items():
        _write_old(vault / name, text)
    mine = vault / "mine.md"
    _write_old(mine, MARKER)
    before = {name: _state(vault / name) for name in PERSONS}

    ran = runner(vault, capsys, {mine: DONE})

    assert {name: _state(vault / name) for name in PERSONS} == before
    assert without_timestamp(mine.read_bytes().decode()) == MARKER_DONE
    assert api.requests == []  # the product note's `model: M1 Pro` was never sent
    if runner is _once:
        assert (ran.code, ran.out.splitlines()) == (
            0, ["done       mine.md: 1 measures", "vaultd: 1 notes processed: 1 done"])
    else:
        for name in PERSONS:
            assert name not in ran.err, ran.err


@pytest.mark.parametrize(("status", "written"), [
    ("status:\n  - Pending\n", "status:\n  - Done\n"),  # Obsidian's list property, typed
    ("status:   # typed as a list\n    - 'Pending'  # here\r\n",
     "status:   # typed as a list\n    - Done  # here\r\n"),
    ("Status: [Pending]\n", "Status: [Done]\n"),
    ("status: [ pending ]   # flow\n", "status: [ Done ]   # flow\n"),
])
def test_a_status_typed_as_a_list_is_read_and_written_in_its_form(
    vault: Path, capsys: pytest.CaptureFixture[str], status: str, written: str,
    runner: Runner,
) -> None:
    note = vault / "listed.md"
    _write_old(note, f"---\ntags:\n  - eval\n{status}aliases: []\n---\n{PARTS}")
    inode = note.stat().st_ino

    runner(vault, capsys, {note: ("Done", *DONE[1:])})

    assert without_timestamp(note.read_bytes().decode()) == \
        f"---\ntags:\n  - eval\n{written}aliases: []\n{PROPS}---\n{PARTS}{RESULT}"
    assert note.stat().st_ino == inode


USERS_CALLOUTS = (
    "> [!answer]- Reveal answer\n> Poteligeo, mostly.\n\n"  # a flashcard, before vaultd's
    "> [!evaluation] My own review\n> It reads well.\n\n"  # no evaluation-yaml: the user's
    "> [!evaluation-result]\n> kept\n\n"
)


def test_the_user_s_callouts_of_vaultd_s_types_are_left_as_they_are(
    vault: Path, capsys: pytest.CaptureFixture[str],
    runner: Runner,
) -> None:
    note = vault / "card.md"
    _write_old(note, f"---\nStatus: Pending\n---\n{USERS_CALLOUTS}{PARTS}")

    runner(vault, capsys, {note: DONE})

    assert without_timestamp(note.read_bytes().decode()) == \
        f"---\nStatus: Done\n{PROPS}---\n{USERS_CALLOUTS}{PARTS}{RESULT}"


def test_broken_frontmatter_is_an_error_and_gets_no_results(
    vault: Path, capsys: pytest.CaptureFixture[str],
    runner: Runner,
) -> None:
    note = vault / "broken.md"
    _write_old(note, f"---\ntitle: foo: bar\nStatus: Pending\n---\n{PARTS}")

    ran = runner(vault, capsys, {note: ("Status: Error", "[!error]")})

    why = ("line 2: frontmatter is not valid YAML: mapping values are not allowed here "
           '(put a value holding ": " or "#" in double quotes)')
    quoted = why.replace('"', '\\"')
    assert without_timestamp(note.read_bytes().decode()) == (
        f'---\ntitle: foo: bar\nStatus: Error\nError: "1 problem(s): {quoted}"\n---\n{PARTS}'
        f"\n***\n\n> [!error] vaultd could not run this note\n> ```error-text\n> {why}\n> ```\n")
    assert "[!evaluation]" not in note.read_text(encoding="utf-8")
    if runner is _once:
        assert ran.code == 1
        assert ran.out.splitlines()[0] == f"error      broken.md: 1 problem(s): {why}"


def test_check_lists_only_vaultd_s_notes_and_hints_at_near_misses(
    vault: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, text in PERSONS.items():
        _write_old(vault / name, text)
    _write_old(vault / "broken.md", f"---\ntitle: foo: bar\nStatus: Pending\n---\n{PARTS}")
    _write_old(vault / "listed.md", f"---\nstatus: [Pending]\n---\n{PARTS}")
    _write_old(vault / "card.md", f"---\nStatus: Pending\n---\n{USERS_CALLOUTS}{PARTS}")
    before = {p: _state(p) for p in vault.rglob("*.md")}

    ran = run_cli("check", str(vault), capsys=capsys)

    frontmatter = "to run it, write `Status: Pending` as a property between the `---` lines"
    start = ("to run it, start the note with a frontmatter block: a `---` line as its very "
             "first line, then `Status: Pending`, then `---`")
    assert ran.code == 1
    assert ran.out.splitlines() == [
        f"{vault}/broken.md:2: frontmatter is not valid YAML: mapping values are not allowed "
        'here (put a value holding ": " or "#" in double quotes)',
        f"{vault}/dataview-fm.md:4: not pending: this Status line is a Dataview inline "
        f"field, not a property ({frontmatter})",
        f"{vault}/dataview.md:1: not pending: this Status line is a Dataview inline field, "
        f"not a property ({start})",
        f"{vault}/no-frontmatter.md:1: not pending: this Status line is a line outside a "
        f"frontmatter block, not a property ({start})",
        f"{vault}/outside.md:3: not pending: this Status line is a line outside a "
        f"frontmatter block, not a property ({start})",
        "vaultd: 7 notes checked, 5 with problems",
    ]
    assert {p: _state(p) for p in vault.rglob("*.md")} == before


def test_check_says_why_a_named_note_is_not_vaultd_s(
    vault: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("task.md", "flashcard-measures.md", "product.md"):
        _write_old(vault / name, PERSONS[name])
    _write_old(vault / "done.md", f"---\nStatus: Done\n---\n{PARTS}")

    ran = run_cli("check", *(str(vault / n) for n in ("task.md", "flashcard-measures.md",
                                                       "product.md", "done.md")),
                  capsys=capsys)

    parts = ("no `[!query]` callout with a `query-text` block (nor an `[!answer]` with an "
             "`answer-text` block)")
    measures = "no `[!measures]` callout with a `measures-md` or `measures-yaml` block"
    left = "; vaultd leaves it as it is"
    assert ran.code == 1
    assert ran.out.splitlines() == [
        f"{vault}/task.md: not a vaultd note: it has {parts}, and {measures}{left}",
        f"{vault}/flashcard-measures.md: not a vaultd note: it has {parts} (line 6: its "
        "`[!answer]` callout holds no `answer-text` block, so it is the note's own text)"
        f"{left}",
        f"{vault}/product.md: not a vaultd note: it has {parts}, and {measures} (line 8: its "
        "`[!query]` callout holds no `query-text` block, so it is the note's own text)"
        f"{left}",
        "vaultd: 4 notes checked, 3 with problems",
    ]


def test_check_warns_of_model_names_the_sdk_does_not_know(
    vault: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (vault / ".vaultd").mkdir()
    (vault / ".vaultd" / "config.toml").write_text('answer_model = "claude-sonet-5-5"\n',
                                                   encoding="utf-8")
    note = vault / "n.md"
    note.write_text(
        "---\nStatus: Pending\nmodel: M1 Pro\n---\n" + ANSWER + "\n"
        "> [!measures]\n> ```measures-md\n> * ---\n>   * id: judge\n>   * type: ai\n"
        ">   * prompt: \"Is it right?\"\n>   * model: claude-opus-4-8\n> * ---\n"
        ">   * id: other\n>   * type: ai\n>   * prompt: \"And this?\"\n"
        ">   * model: claude-opus-48\n> ```\n", encoding="utf-8")

    ran = run_cli("check", str(vault), capsys=capsys)

    sdk = "is not a model the installed anthropic SDK knows"
    assert ran.code == 0
    assert ran.out.splitlines() == [
        f"{vault}: warning: setting `answer_model`: `claude-sonet-5-5` {sdk} "
        "(did you mean `claude-sonnet-5-5`?)",
        f"{note}:3: warning: property `model`: `M1 Pro` {sdk}",
        f"{note}:17: warning: measure `other`: model `claude-opus-48` {sdk} "
        "(did you mean `claude-opus-4-8`?)",
        "vaultd: 1 notes checked, 0 with problems, 2 with warnings",
    ]


def test_check_reads_the_sdk_s_model_names_without_importing_the_sdk(vault: Path) -> None:
    """Importing ``anthropic`` takes seconds; ``check`` reads only its list of names."""
    (vault / "n.md").write_text(f"---\nStatus: Pending\nmodel: claude-sonet-5-5\n---\n{PARTS}",
                                encoding="utf-8")
    ran = run_process("check", str(vault), env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert "did you mean `claude-sonnet-5-5`?" in ran.out
    imported = {line.rsplit("|", 1)[-1].strip() for line in ran.err.splitlines()
                if line.startswith("import time:")}
    assert "anthropic" not in imported and "httpx" not in imported


def test_status_counts_only_vaultd_s_notes(vault: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    for name, text in PERSONS.items():
        _write_old(vault / name, text)
    _write_old(vault / "done-task.md", "---\nstatus: done\ncost_usd: 3\ntokens_in: 9\n---\n- [x]\n")
    _write_old(vault / "error-task.md", "---\nStatus: Error\nError: the printer\n---\n- [ ] x\n")
    _write_old(vault / "mine.md", MARKER)
    _write_old(vault / "listed.md", f"---\nstatus:\n  - Done\n---\n{PARTS}")
    _write_old(vault / "failed.md", f'---\nStatus: Error\nError: "it failed"\n---\n{PARTS}')
    long = "x" * 5000  # past the head: read whole
    _write_old(vault / "long.md", f"---\nStatus: Done\nnote: {long}\n---\n{PARTS}")

    ran = run_cli("status", str(vault), capsys=capsys)

    assert ran.code == 0
    assert ran.out.splitlines() == [
        "1 pending, 0 processing, 2 done, 1 error", "daemon: not running", "last errors:",
        "  failed.md: it failed"]


def test_the_report_counts_only_vaultd_s_notes(vault: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    for name, text in PERSONS.items():
        _write_old(vault / name, text)
    _write_old(vault / "done-task.md", "---\nstatus: done\n---\n- [x] Paint\n")
    _write_old(vault / "mine.md", MARKER)
    _write_old(vault / "finished.md", MARKER_DONE)

    ran = run_cli("report", str(vault), capsys=capsys)

    assert ran.code == 0
    report = (vault / "vaultd report.md").read_text(encoding="utf-8")
    assert "1 note(s) still Pending or Processing are not counted." in report
    assert "| [[finished]] | Done |" in report
    assert "[[done-task]]" not in report and "[[task]]" not in report
