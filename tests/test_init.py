"""``vaultd init``: a commented config.toml and a template note, never overwriting."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vaultd.cli import build_parser
from vaultd.config import load
from vaultd.errors import FormatError
from vaultd.evaluate.prepare import check_note
from vaultd.note.measures import parse_measures
from vaultd.note.text import parse
from vaultd.obsidian.scaffold import TEMPLATE_NAME, template_note

from .conftest import ROOT, run_cli
from .fakeapi import FakeMessagesAPI
from .notes import SEED, SEED_REPLIES


def measures_of(text: str) -> list[dict[str, object]]:
    block = parse(text).first("measures").block(("md",))  # type: ignore[union-attr]
    assert block is not None
    measures, problems = parse_measures(block.content, "md", 1)
    assert problems == []
    return [m.model_dump(exclude={"line"}) for m in measures]


def test_init_given_a_relative_path_shows_every_file_relative(
    vault: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(vault.parent)
    ran = run_cli("init", vault.name, capsys=capsys)
    assert ran.code == 0
    assert [line for line in ran.out.splitlines() if line.startswith("wrote")] == [
        "wrote .vaultd/config.toml", f"wrote Templates/{TEMPLATE_NAME}",
        "wrote vaultd report.md", "wrote vaultd.base"]


def test_init_writes_the_config_and_a_template(vault: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    ran = run_cli("init", str(vault), capsys=capsys)

    assert ran.code == 0
    assert ran.out.splitlines() == [
        "wrote .vaultd/config.toml",
        f"wrote Templates/{TEMPLATE_NAME}",
        "wrote vaultd report.md",
        "wrote vaultd.base",
        "vaultd: in Obsidian, set the Templates core plugin's folder to Templates to insert "
        "the template",
    ]
    assert load(vault, environ={}) == load(None, environ={})
    template = (vault / "Templates" / TEMPLATE_NAME).read_text(encoding="utf-8")
    assert template == template_note()


def test_the_template_is_the_seed_s_shape_with_its_four_measures() -> None:
    text = template_note()
    note = parse(text)
    assert note.status == "Draft" and not note.is_pending  # run once the person sets Pending
    assert note.block_text("query", ("text",)) == ""
    assert note.block_text("answer", ("text",)) == ""
    assert measures_of(text) == measures_of(SEED)
    with pytest.raises(FormatError) as caught:  # until the question is written
        check_note(note)
    assert [p.message for p in caught.value.problems] == [
        "the note has neither a query nor an answer"]


def test_init_never_overwrites(vault: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (vault / ".vaultd").mkdir()
    (vault / ".vaultd" / "config.toml").write_text("workers = 2\n", encoding="utf-8")

    ran = run_cli("init", str(vault), capsys=capsys)
    assert ran.code == 0
    assert ran.out.splitlines()[:2] == ["kept .vaultd/config.toml (it exists)",
                                        f"wrote Templates/{TEMPLATE_NAME}"]
    assert (vault / ".vaultd" / "config.toml").read_text(encoding="utf-8") == "workers = 2\n"

    (vault / "Templates" / TEMPLATE_NAME).write_text("mine", encoding="utf-8")
    (vault / "vaultd report.md").write_text("my own report\n", encoding="utf-8")
    ran = run_cli("init", str(vault), capsys=capsys)
    assert ran.code == 0
    assert ran.out.splitlines()[:4] == ["kept .vaultd/config.toml (it exists)",
                                        f"kept Templates/{TEMPLATE_NAME} (it exists)",
                                        "kept vaultd report.md (it exists)",
                                        "kept vaultd.base (it exists)"]
    assert (vault / "Templates" / TEMPLATE_NAME).read_text(encoding="utf-8") == "mine"
    assert (vault / "vaultd report.md").read_text(encoding="utf-8") == "my own report\n"


def test_init_uses_the_templates_plugin_s_folder(vault: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (vault / ".obsidian").mkdir()
    (vault / ".obsidian" / "templates.json").write_text(json.dumps({"folder": "Meta/Tmpl/"}))

    ran = run_cli("init", str(vault), capsys=capsys)

    assert ran.out.splitlines() == ["wrote .vaultd/config.toml",
                                    f"wrote Meta/Tmpl/{TEMPLATE_NAME}",
                                    "wrote vaultd report.md", "wrote vaultd.base"]
    assert (vault / "Meta" / "Tmpl" / TEMPLATE_NAME).is_file()


def test_init_needs_a_folder(vault: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("init", str(vault / "missing"), capsys=capsys).code == 2


def test_the_template_is_not_a_note_but_a_note_made_from_it_runs(
    vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    run_cli("init", str(vault), capsys=capsys)
    template = vault / "Templates" / TEMPLATE_NAME
    before = template.read_bytes()
    note = vault / "Question.md"
    note.write_text(template_note().replace(  # what the person does: the question, then Pending
        "> ```query-text\n> \n", "> ```query-text\n> Which drugs treat Sézary syndrome?\n"
    ).replace("Status: Draft\n", "Status: Pending\n"), encoding="utf-8")
    api.rule("Which drugs treat", "Mogamulizumab (Poteligeo) is the usual second line.")
    for contains, reply in SEED_REPLIES.items():
        api.rule(contains, reply)

    ran = run_cli("run", str(vault), "--once", capsys=capsys)

    assert ran.code == 0, ran
    assert ran.out.splitlines()[:2] == ["done       Question.md: 4 measures",
                                        "vaultd: 1 notes processed: 1 done"]
    assert template.read_bytes() == before
    text = note.read_text(encoding="utf-8")
    assert "> Mogamulizumab (Poteligeo) is the usual second line.\n" in text
    assert text.count("> [!evaluation-result]") == 4
    assert run_cli("check", str(vault), capsys=capsys).out.splitlines() == [
        "vaultd: 1 notes checked, 0 with problems"]
    assert run_cli("status", str(vault), capsys=capsys).out.splitlines()[0] == (
        "0 pending, 0 processing, 1 done, 0 error")


def test_every_command_is_in_the_readme_and_has_help() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    for name, sub in commands.choices.items():  # type: ignore[union-attr]
        assert re.search(rf"^\| `vaultd {name}\b", readme, re.M), name
        assert sub.description, name


def test_check_skips_the_templates_folder_from_a_relative_path(
    vault: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_cli("init", str(vault), capsys=capsys)
    monkeypatch.chdir(vault / "Templates")
    assert run_cli("check", "..", capsys=capsys).out.splitlines() == [
        "vaultd: 0 notes checked, 0 with problems"]
    monkeypatch.chdir(vault)
    assert run_cli("check", ".", capsys=capsys).out.splitlines() == [
        "vaultd: 0 notes checked, 0 with problems"]
