"""What the README and the sample vault show of panels is what vaultd does.

The README's panel example (the note before its run, its properties and its ``[!panel]``
summary after) is the run of tests/test_panels.py's first test, against the same loopback
API; only the run's id and times differ from run to run, and are normalised. The sample
vault's panel note waits, unchanged, without a key (as the quick start says), and runs
with one.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from .conftest import ROOT, run_cli
from .fakeapi import FakeMessagesAPI
from .test_panels import SONNET, Panel, frontmatter, panel_note, write_panel

README = ROOT / "README.md"
# the run id, and the times, the README's example shows
RUN = "2026-12-02T14:35:07Z"
EVALUATED = "2026-12-02T14:35:09"
SAMPLE_PANEL = Path("Panels") / "Sezary second-line.md"
NO_KEY = "no API key (set ANTHROPIC_API_KEY)"


def readme_block(name: str) -> str:
    """The fenced block between ``<!-- name -->`` and ``<!-- /name -->`` in the README."""
    text = README.read_text(encoding="utf-8")
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    assert text.count(start) == 1 and text.count(end) == 1, f"README: markers {start} {end}"
    block = text.split(start, 1)[1].split(end, 1)[0]
    fenced = re.fullmatch(r"\s*```\w*\n(.*?)```\s*", block, re.S)
    assert fenced is not None, f"README: no fenced block between {start} and {end}"
    return fenced.group(1)


def file_stamp(run: str) -> str:
    """``2026-12-02T14:35:07Z`` -> ``2026-12-02 143507``, as answer notes' names have it."""
    return f"{run[:10]} {run[11:19].replace(':', '')}"


def normalised(text: str, run: str) -> str:
    """``text`` with the run's id, its answer notes' names and ``Evaluated`` as the README
    shows them."""
    text = text.replace(run, RUN).replace(file_stamp(run) + " ", file_stamp(RUN) + " ")
    return re.sub(r"(?m)^Evaluated: .*$", f"Evaluated: {EVALUATED}", text)


def callout(text: str, kind: str) -> str:
    """The ``> [!kind]`` callout of ``text``, its lines with their endings."""
    lines = text.splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line.startswith(f"> [!{kind}]"))
    last = next((i for i in range(first, len(lines)) if not lines[i].startswith(">")),
                len(lines))
    return "".join(lines[first:last])


def test_the_readme_shows_a_panel_note_as_it_is_written() -> None:
    head = panel_note().split("\n---\n", 1)[0] + "\n---\n"
    assert readme_block("panel-note") == head
    assert "samples: 5\nassistants: [claude-opus-5, claude-sonnet-5-5]\n" in head


def test_the_readme_shows_what_the_run_writes(
        vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]) -> None:
    Panel(api)
    note = write_panel(vault, panel_note())

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 0, ran
    text = note.read_text(encoding="utf-8")
    run = str(frontmatter(note)["run"])
    head = text.split("\n---\n", 1)[0] + "\n---\n"
    assert readme_block("panel-properties") == normalised(head, run)
    assert readme_block("panel-example") == normalised(callout(text, "panel"), run)


def test_the_sample_vault_s_panel_note_waits_unchanged_without_a_key(
        tmp_path: Path, no_key: None, capsys: pytest.CaptureFixture[str]) -> None:
    vault = tmp_path / "sample_vault"
    shutil.copytree(ROOT / "sample_vault", vault)
    before = (vault / SAMPLE_PANEL).read_bytes()

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 1, ran
    assert ran.out.splitlines() == [
        f"waiting    Ask the assistant - new question.md: {NO_KEY}",
        "done       Brand mentions - programmatic only.md: 5 measures",
        f"waiting    Sezary syndrome - second-line options.md: {NO_KEY}",
        f"waiting    Panels/Sezary second-line.md: {NO_KEY}",
        "vaultd: 4 notes processed: 1 done, 3 waiting",
    ]
    assert (vault / SAMPLE_PANEL).read_bytes() == before
    assert sorted(p.name for p in (vault / "Panels").iterdir()) == ["Sezary second-line.md"]


def test_the_sample_vault_s_panel_note_runs_with_a_key(
        vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]) -> None:
    panel = Panel(api)
    (vault / "Panels").mkdir()
    note = vault / SAMPLE_PANEL
    shutil.copyfile(ROOT / "sample_vault" / SAMPLE_PANEL, note)

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 0, ran
    assert ran.out.splitlines()[0].startswith(
        "done       Panels/Sezary second-line.md: 3 of 3 answers, poteligeo_mentioned ")
    assert [r.model for r in panel.answer_requests()] == [SONNET] * 3
    answers = sorted((vault / "Panels" / "Sezary second-line").glob("*.md"))
    assert [p.name.split(" ", 2)[2] for p in answers] == [
        f"{SONNET} 1.md", f"{SONNET} 2.md", f"{SONNET} 3.md"]
    assert all(frontmatter(p)["panel"] == "[[Sezary second-line]]" for p in answers)
    props = frontmatter(note)
    assert props["status"] == "Done"
    # sonnet's first three answers: Poteligeo named in two, first and second
    assert props["eval_poteligeo_mentioned"] == 0.6667
    assert "2/3 · 67% (21–94%)" in note.read_text(encoding="utf-8")  # noqa: RUF001
