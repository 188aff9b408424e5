"""``vaultd report``: the report note's figures match the notes, its charts parse in the real
Mermaid, the Bases file is valid, and only vaultd's own files are ever written."""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

import mistune
import pytest
import yaml

from vaultd.cli import build_parser
from vaultd.note.outcomes import Failure, Outcome, Skipped, Success
from vaultd.note.properties import yaml_value
from vaultd.note.render import evaluation_block, evaluation_pair
from vaultd.obsidian.report import fmt

from .conftest import ROOT, run_cli
from .mermaidparse import parse_charts

MARKDOWN = mistune.create_markdown(renderer=None, plugins=["table"])
REPORT = "vaultd report.md"

MEASURES = [  # id, description, type
    ("mentioned", "AI Task: Extract all mentioned treatment names", "ai"),
    ("named", "Is Poteligeo mentioned?", "programmatic"),
    ("position", "What position is Poteligeo in?", "programmatic"),
    ("strength", "How strongly is Poteligeo recommended?", "ai"),
    ("remark", "A free-text remark", "ai"),
]

# note -> (status, Evaluated, the outcome of each measure in MEASURES order)
NOTES: dict[str, tuple[str, str, list[Outcome]]] = {
    "notes/a.md": ("Done", "2025-01-10T09:00:00", [
        Success(["Poteligeo", "Adcetris"]), Success(True), Success(1), Success(9),
        Success("fine")]),
    "notes/b.md": ("Done", "2025-01-20T09:00:00", [
        Success(["Adcetris"]), Success(False), Success("N/A"), Success(8),
        Success("**bold** | pipe <b>x</b> [[link]] ==hi== %%c%% $x$ #tag `code` 50% a_b_c")]),
    "c.md": ("Done", "2025-02-03T09:00:00", [
        Success(["Poteligeo"]), Success(True), Success(2), Success(2), Success("fine")]),
    "e | pipe.md": ("Done", "2025-02-28T09:00:00", [
        Success(["Poteligeo", "Targretin", "Adcetris"]), Success(True), Success(1),
        Success(10), Success(None)]),
    "err.md": ("Error", "2025-02-05T09:00:00", [
        Failure("no API key (set ANTHROPIC_API_KEY)"), Skipped("input `mentioned` failed"),
        Skipped("input `mentioned` failed"), Failure("the model said no"), Success("ok")]),
}


def finished_note(status: str, evaluated: str, outcomes: list[Outcome],
                  measures: list[tuple[str, str, str]] = MEASURES) -> str:
    """A finished note in the seed's shape, its results written by vaultd's own renderer."""
    properties = []  # and its results as properties, as vaultd writes them
    for (measure_id, _, _), outcome in zip(measures, outcomes, strict=True):
        text = yaml_value(outcome.value) if isinstance(outcome, Success) else None
        if text is not None:
            properties.append(f"eval_{measure_id}:{'' if text[:1] == chr(10) else ' '}{text}")
    written = [line.split(":", 1)[0] for line in properties]
    if written:  # the record of the keys vaultd wrote, as the run writes it
        properties.append(f"vaultd_properties:{yaml_value(written)}")
    lines = ["---", f"Status: {status}", "topic: CTCL", f"Evaluated: {evaluated}",
             *"\n".join(properties).splitlines(), "---", "",
             "***", "", "> [!answer]", "> ```answer-text", "> An answer.", "> ```", "", "***",
             "", "> [!measures]-", "> ```measures-md"]
    for measure_id, description, kind in measures:
        lines += ["> * ---", f">   * id: {measure_id}", f'>   * description: "{description}"',
                  f">   * type: {kind}"]
        lines.append(">   * prompt: 'Rate it.'" if kind == "ai" else ">   * logic: 'return 1;'")
    lines += ["> ```", "", "***", ""]
    pairs = [evaluation_pair(description, kind, outcome)
             for (_, description, kind), outcome in zip(measures, outcomes, strict=True)]
    lines += evaluation_block(pairs)
    return "\n".join(lines) + "\n"


def make_vault(vault: Path) -> None:
    for name, (status, evaluated, outcomes) in NOTES.items():
        path = vault / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(finished_note(status, evaluated, outcomes), encoding="utf-8")
    pending = finished_note("Pending", "2025-02-01T00:00:00", NOTES["c.md"][2])
    (vault / "pending.md").write_text(pending, encoding="utf-8")
    (vault / ".trash").mkdir()
    (vault / ".trash" / "old.md").write_text(finished_note(*NOTES["c.md"]), encoding="utf-8")
    (vault / "plain.md").write_text("# Just a note\n\nStatus: Done\n", encoding="utf-8")
    (vault / "task.md").write_text("---\nStatus: Done\n---\nA task, not vaultd's.\n",
                                   encoding="utf-8")


# -- reading the report as a Markdown parser does ------------------------------------------


def _text(nodes: list[dict[str, Any]]) -> str:
    """A cell's or heading's text; markup in it (emphasis, HTML, links) fails the test."""
    out = []
    for node in nodes:
        assert node["type"] in ("text", "codespan"), f"markup in a cell: {node}"
        out.append(node["raw"])
    return "".join(out)


def sections(markdown: str) -> dict[str, dict[str, Any]]:
    """Per heading: its tables (each a list of {column: text}) and its mermaid charts."""
    found: dict[str, dict[str, Any]] = {}
    current = found.setdefault("", {"tables": [], "charts": [], "text": []})
    for node in MARKDOWN(markdown):  # type: ignore[union-attr]
        if node["type"] == "heading":
            current = found.setdefault(_text(node["children"]),
                                       {"tables": [], "charts": [], "text": []})
        elif node["type"] == "table":
            head, body = node["children"]
            columns = [_text(cell["children"]) for cell in head["children"]]
            rows = [dict(zip(columns, (_text(c["children"]) for c in row["children"]),
                             strict=True)) for row in body["children"]]
            current["tables"].append(rows)
        elif node["type"] == "block_code" and node["attrs"].get("info") == "mermaid":
            current["charts"].append(node["raw"])
        elif node["type"] == "paragraph":
            current["text"].append(node["children"])
    return found


@pytest.fixture
def report(vault: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, Any]]:
    make_vault(vault)
    ran = run_cli("report", str(vault), capsys=capsys)
    assert ran.code == 0, ran.err
    assert ran.out.splitlines() == [
        f"vaultd: {vault / REPORT}: written (5 notes, 5 measures)",
        f"vaultd: {vault / 'vaultd.base'}: written",
    ]
    return sections((vault / REPORT).read_text(encoding="utf-8"))


def test_overview_counts_finished_notes_only(report: dict[str, dict[str, Any]]) -> None:
    [[row]] = report["Overview"]["tables"]
    assert row == {"notes evaluated": "5", "Done": "4", "Error": "1", "measures": "5",
                   "last evaluated": "2025-02-28T09:00:00"}
    said = " ".join(_text([n for n in p if n["type"] == "text"])
                    for p in report["Overview"]["text"])
    assert "1 note(s) still Pending or Processing are not counted." in said


def test_measure_figures_match_the_notes(report: dict[str, dict[str, Any]]) -> None:
    [summary] = report["Measures"]["tables"]
    assert [row["measure"] for row in summary] == [m[0] for m in MEASURES]
    rows = {row["measure"]: row for row in summary}
    assert [rows[m]["results"] for m, _, _ in MEASURES] == ["5"] * 5
    assert [rows[m]["failed"] for m, _, _ in MEASURES] == ["1", "1", "1", "1", "0"]
    assert [rows[m]["kind"] for m, _, _ in MEASURES] == [
        "text", "boolean", "text", "number", "text"]

    strengths = [9, 8, 2, 10]
    [[numbers]] = report["strength"]["tables"][:1]
    assert numbers == {"results": "5", "failed": "1", "null": "0",
                       "mean": fmt(statistics.fmean(strengths)),  # 7.25
                       "median": fmt(statistics.median(strengths)), "min": "2", "max": "10"}
    assert numbers["mean"] == "7.25" and numbers["median"] == "8.5"
    assert rows["strength"]["summary"] == "mean 7.25, median 8.5, min 2, max 10"

    [[named]] = report["named"]["tables"][:1]
    assert named == {"results": "5", "failed": "1", "true": "3", "false": "1", "null": "0",
                     "share true": "75.0%"}
    assert rows["named"]["summary"] == "75.0% true (3 of 4)"

    counts, distribution = report["mentioned"]["tables"]
    assert counts == [{"results": "5", "failed": "1", "null": "0", "distinct values": "3"}]
    assert distribution == [
        {"value": "Adcetris", "notes": "3", "share of notes": "75.0%"},
        {"value": "Poteligeo", "notes": "3", "share of notes": "75.0%"},
        {"value": "Targretin", "notes": "1", "share of notes": "25.0%"},
    ]

    counts, distribution = report["position"]["tables"]
    assert [(r["value"], r["notes"]) for r in distribution] == [("1", "2"), ("2", "1"),
                                                                 ("N/A", "1")]
    said = _text(report["position"]["text"][-1])
    assert said == ("The 3 numeric values among them: mean 1.3333, median 1, min 1, max 2.")

    counts, distribution = report["remark"]["tables"]
    assert counts == [{"results": "5", "failed": "0", "null": "1", "distinct values": "3"}]
    assert distribution[0] == {"value": "fine", "notes": "2", "share of notes": "50.0%"}


def test_trends_by_month_of_evaluated(report: dict[str, dict[str, Any]]) -> None:
    trend = report["strength"]["tables"][1]
    assert trend == [{"month": "2025-01", "results": "2", "mean": "8.5"},
                     {"month": "2025-02", "results": "2", "mean": "6"}]
    trend = report["named"]["tables"][1]
    assert trend == [{"month": "2025-01", "results": "2", "% true": "50"},
                     {"month": "2025-02", "results": "2", "% true": "100"}]
    assert len(report["mentioned"]["tables"]) == 2  # no trend for text


def test_notes_table_shows_every_value_exactly(report: dict[str, dict[str, Any]]) -> None:
    [rows] = report["Notes"]["tables"]
    assert [row["note"] for row in rows] == [
        "[[c]]", "[[e | pipe]]", "[[err]]", "[[notes/a]]", "[[notes/b]]"]
    by_link = {row["note"][2:-2]: row for row in rows}
    for name, (status, evaluated, outcomes) in NOTES.items():
        row = by_link[name[:-3]]
        assert row["status"] == status and row["evaluated"] == evaluated
        for (measure_id, _, _), outcome in zip(MEASURES, outcomes, strict=True):
            if isinstance(outcome, Success):
                value = outcome.value
                shown = (", ".join(value) if isinstance(value, list) else
                         "null" if value is None else
                         str(value).lower() if isinstance(value, bool) else str(value))
            elif isinstance(outcome, Failure):
                shown = f"Error: {outcome.message}"
            else:
                shown = f"Skipped: {outcome.reason}"
            assert row[measure_id] == shown, (name, measure_id)


def test_every_chart_parses_in_mermaid(vault: Path, report: dict[str, dict[str, Any]]) -> None:
    found = [chart for section in report.values() for chart in section["charts"]]
    text = (vault / REPORT).read_text(encoding="utf-8")
    assert len(found) == text.count("```mermaid") >= 8
    code, results = parse_charts(found)
    assert code == 0, [(c, r) for c, r in zip(found, results, strict=True) if not r["ok"]]
    assert {r["type"] for r in results} == {"pie", "xychart"}
    kinds = [chart.split("\n", 1)[0] for chart in found]
    assert "xychart-beta" in kinds and "pie showData" in kinds


def test_base_file_is_valid_yaml_with_the_documented_keys(
    vault: Path, report: dict[str, dict[str, Any]]
) -> None:
    text = (vault / "vaultd.base").read_text(encoding="utf-8")
    assert text.startswith("# vaultd base:")
    base = yaml.safe_load(text)
    assert set(base) <= {"filters", "formulas", "properties", "summaries", "views"}
    assert base["filters"] == {"and": ['file.ext == "md"', 'file.hasProperty("Evaluated")']}
    [view] = base["views"]
    assert set(view) <= {"type", "name", "limit", "filters", "order", "sort", "groupBy",
                         "summaries"}
    assert view["type"] == "table" and isinstance(view["name"], str)
    assert view["order"] == ["file.name", "note.Status", "note.Evaluated",
                             *(f"note.eval_{m}" for m, _, _ in MEASURES)]
    assert view["sort"] == [{"property": "note.Evaluated", "direction": "DESC"}]
    assert view["summaries"] == {"note.eval_named": "Checked", "note.eval_strength": "Average"}
    for key, config in base["properties"].items():
        assert key.startswith(("note.", "file.", "formula.")) and set(config) == {"displayName"}


def test_the_base_uses_the_property_prefix_setting(vault: Path) -> None:
    from vaultd.note.results import NoteResults, Result
    from vaultd.obsidian.report import base_text, summarise

    note = NoteResults("n.md", "Done", None, (Result("x", "x", "ai", "1"),))
    base = yaml.safe_load(base_text(summarise((note,)), "r_"))
    assert base["views"][0]["order"][-1] == "note.r_x"


def test_rerun_changes_nothing_and_an_update_is_in_place(
    vault: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_vault(vault)
    assert run_cli("report", str(vault), capsys=capsys).code == 0
    report, base = vault / REPORT, vault / "vaultd.base"
    before = [(p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in (report, base)]
    ran = run_cli("report", str(vault), capsys=capsys)
    assert ran.code == 0 and ran.out.splitlines() == [
        f"vaultd: {report}: already up to date (5 notes, 5 measures)",
        f"vaultd: {base}: already up to date",
    ]
    assert [(p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
            for p in (report, base)] == before
    (vault / "c.md").unlink()
    assert run_cli("report", str(vault), capsys=capsys).code == 0
    assert report.stat().st_ino == before[0][0]  # the same file, rewritten in place
    assert "[[c]]" not in report.read_text(encoding="utf-8")
    assert base.read_bytes() == before[1][2]  # same measures: the base is unchanged
    journal = vault / ".vaultd" / "journal"
    assert [p for p in journal.iterdir() if p.stat().st_size] == []  # only free slots left
    assert [p.name for p in vault.iterdir() if p.name.startswith(".") and "tmp" in p.name] == []


def test_a_users_file_at_the_report_path_is_never_touched(
    vault: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_vault(vault)
    mine = "# My own report\n\nHand-made.\n"
    (vault / REPORT).write_text(mine, encoding="utf-8")
    ran = run_cli("report", str(vault), capsys=capsys)
    assert ran.code == 1
    assert "was not written by vaultd" in ran.err and str(vault / REPORT) in ran.err
    assert (vault / REPORT).read_text(encoding="utf-8") == mine
    assert not (vault / "vaultd.base").exists()


def test_a_base_changed_in_obsidian_is_left_alone(
    vault: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_vault(vault)
    theirs = "views:\n  - type: table\n    name: Mine\n"  # as Obsidian saves it: no marker
    (vault / "vaultd.base").write_text(theirs, encoding="utf-8")
    ran = run_cli("report", str(vault), capsys=capsys)
    assert ran.code == 0
    assert f"{vault / 'vaultd.base'}: left alone" in ran.out
    assert (vault / "vaultd.base").read_text(encoding="utf-8") == theirs
    assert (vault / REPORT).exists()


def test_report_path_setting_and_its_checks(vault: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    make_vault(vault)
    (vault / ".vaultd").mkdir()
    (vault / ".vaultd" / "config.toml").write_text('report_path = "Reports/Summary.md"\n',
                                                   encoding="utf-8")
    assert run_cli("report", str(vault), capsys=capsys).code == 0
    text = (vault / "Reports" / "Summary.md").read_text(encoding="utf-8")
    assert "[[Reports/vaultd.base]]" in text
    assert (vault / "Reports" / "vaultd.base").exists() and not (vault / REPORT).exists()
    assert run_cli("report", str(vault), capsys=capsys).code == 0  # it skips itself
    assert "[[Reports/Summary]]" not in (vault / "Reports" / "Summary.md").read_text("utf-8")
    for bad in ("../out.md", "/tmp/x.md", ".hidden/r.md", "report.txt"):
        ran = run_cli("report", str(vault), "--report-path", bad, capsys=capsys)
        assert ran.code == 2 and "report_path" in ran.err, bad


def test_an_empty_vault_gets_a_report_too(vault: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("report", str(vault), capsys=capsys).code == 0
    found = sections((vault / REPORT).read_text(encoding="utf-8"))
    assert found["Overview"]["tables"][0][0]["notes evaluated"] == "0"
    assert "Notes" not in found and "Measures" not in found
    assert yaml.safe_load((vault / "vaultd.base").read_text(encoding="utf-8"))["views"]


def test_the_command_is_documented() -> None:
    parser = build_parser()
    ran = parser.parse_args(["report", "v"])
    assert ran.command == "report"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "| `vaultd report VAULT`" in readme and "`report_path`" in readme
    assert os.path.exists(ROOT / "tests" / "mermaid" / "package-lock.json")
