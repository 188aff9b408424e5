"""The report note and ``vaultd.base`` learn about panels: figures per assistant over every
panel note's latest run, from answer notes a real ``vaultd run --once`` wrote against the
loopback API; single notes reported exactly as without panels."""

# ruff: noqa: RUF001  (the cells put an en dash between an interval's ends)

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from scipy import stats

from .conftest import run_cli
from .daemonproc import wait_for
from .fakeapi import FakeMessagesAPI, Reply, Request
from .mermaidparse import parse_charts
from .test_panels import (
    ANSWERS,
    JUDGED,
    OPUS,
    QUERY,
    SONNET,
    Panel,
    _utc_now,
    answer_notes,
    frontmatter,
    panel_note,
    write_panel,
)
from .test_report import REPORT, make_vault, sections

PANEL_HEAD = ["measure", "description", "kind", OPUS, SONNET]


def _run_panel(vault: Path, capsys: pytest.CaptureFixture[str], text: str) -> Path:
    note = write_panel(vault, text)
    ran = run_cli("run", str(vault), "--once", capsys=capsys)
    assert ran.code == 0, ran
    return note


def _report(vault: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    ran = run_cli("report", str(vault), capsys=capsys)
    assert ran.code == 0, ran
    return (vault / REPORT).read_text(encoding="utf-8").splitlines()


def _panels(lines: list[str]) -> list[str]:
    """The Panels section, its heading to the line before the next ``## `` heading."""
    start = lines.index("## Panels")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    return lines[start:end]


# -- the figures, by hand and by scipy ----------------------------------------------------


def _wilson_percent(k: int, n: int) -> tuple[int, int]:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return math.floor(ci.low * 100 + 0.5), math.floor(ci.high * 100 + 0.5)


def _t_interval(values: list[float]) -> tuple[float, float]:
    low, high = stats.t.interval(0.95, len(values) - 1, loc=stats.tmean(values),
                                 scale=stats.sem(values))
    return round(float(low), 2), round(float(high), 2)


def test_the_hand_computed_figures_agree_with_scipy() -> None:
    # What each model's five answers name (the loopback API answers them in turn).
    names = {model: [JUDGED[a][0] for a in answers] for model, answers in ANSWERS.items()}
    strength = {model: [float(JUDGED[a][1]) for a in answers]
                for model, answers in ANSWERS.items()}
    # Poteligeo named: sonnet 4 of 5 (at 1, 2, 1, 2), opus 2 of 5 (at 1, 2)
    assert [("Poteligeo" in n) for n in names[SONNET]] == [True, True, False, True, True]
    assert [("Poteligeo" in n) for n in names[OPUS]] == [False, False, True, False, True]
    assert _wilson_percent(4, 5) == (38, 96)
    assert _wilson_percent(2, 5) == (12, 77)
    assert _wilson_percent(3, 5) == (23, 88)
    assert _wilson_percent(1, 5) == (4, 62)
    assert _t_interval([1, 2, 1, 2]) == (0.58, 2.42)  # 1.5 ± 3.182 · 0.289
    assert _t_interval([1, 2]) == (-4.85, 7.85)  # 1.5 ± 12.706 · 0.5
    assert strength[SONNET] == [9, 6, 1, 10, 5] and strength[OPUS] == [1, 2, 9, 1, 6]
    assert stats.tmean(strength[SONNET]) == 6.2 and _t_interval(strength[SONNET]) == (1.78, 10.62)
    assert stats.tmean(strength[OPUS]) == 3.8 and _t_interval(strength[OPUS]) == (-0.62, 8.22)
    # Adcetris: opus 4 of 5 at 1, 2, 1, 1 (mean 1.25); sonnet 3 of 5 at 2, 1, 1 (1.33)
    assert [n.index("Adcetris") + 1 for n in names[OPUS] if "Adcetris" in n] == [1, 2, 1, 1]
    assert [n.index("Adcetris") + 1 for n in names[SONNET] if "Adcetris" in n] == [2, 1, 1]


def test_a_finished_panel_gives_the_panels_section(
        vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]) -> None:
    Panel(api)
    note = _run_panel(vault, capsys, panel_note())
    run = str(frontmatter(note)["run"])
    assert len(answer_notes(vault)) == 10

    ran = run_cli("report", str(vault), capsys=capsys)

    assert ran.code == 0, ran
    assert ran.out.splitlines()[0] == (f"vaultd: {vault / REPORT}: written (0 notes, 0 measures, "
                                       "10 answer notes)")
    lines = (vault / REPORT).read_text(encoding="utf-8").splitlines()
    assert _panels(lines) == [
        "## Panels",
        "",
        "Figures per assistant over the answer notes of 1 panel note(s), each panel's latest "
        "run only (earlier runs' answer notes are left out): 10 answer(s) from 2 "
        "assistant(s). A share is of the answers whose measure succeeded, with its 95% "
        "Wilson interval; a mean has its 95% t interval.",
        "",
        "| panel | latest run | answers | earlier runs |",
        "|---|---|---|---|",
        f"| [[Queries/Sezary]] | {run} | 10 | 0 |",
        "",
        "### Panel measures",
        "",
        f"| measure | description | kind | {OPUS} | {SONNET} |",
        "|---|---|---|---|---|",
        "| `poteligeo_mentioned` | Is Poteligeo mentioned as a second-line option? | boolean "
        "| 2/5 · 40% (12–77%) | 4/5 · 80% (38–96%) |",
        "| `poteligeo_position` | What position is Poteligeo mentioned in the list of "
        "options? | number | 1.5 (-4.85–7.85) · n=2 · N/A 3/5 | "
        "1.5 (0.58–2.42) · n=4 · N/A 1/5 |",
        "| `recommendation_strength` | How strongly is Poteligeo recommended? | number "
        "| 3.8 (-0.62–8.22) · n=5 | 6.2 (1.78–10.62) · n=5 |",
        "",
        "### Panel mentions: `mentioned_treatments`",
        "",
        "AI Task: Extract all mentioned treatment names: per item named, the share of each "
        "assistant's answers naming it and its mean position in the list (pos, 1 = first), "
        "most named first.",
        "",
        f"| item | {OPUS} | {SONNET} |",
        "|---|---|---|",
        "| Adcetris | 4/5 · 80% (38–96%) · pos 1.25 | 3/5 · 60% (23–88%) · pos 1.33 |",
        "| Poteligeo | 2/5 · 40% (12–77%) · pos 1.5 | 4/5 · 80% (38–96%) · pos 1.5 |",
        "| Istodax | 1/5 · 20% (4–62%) · pos 1 | 1/5 · 20% (4–62%) · pos 1 |",
    ]
    # answer notes and the panel note are not single notes: no Notes table, no measures
    assert "## Notes" not in lines and "## Measures" not in lines
    found = sections("\n".join(lines))
    [[overview]] = found["Overview"]["tables"]
    assert overview["notes evaluated"] == "0"


def test_the_base_gets_a_view_of_answer_notes_by_assistant(
        vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]) -> None:
    Panel(api)
    _run_panel(vault, capsys, panel_note())
    _report(vault, capsys)

    base = yaml.safe_load((vault / "vaultd.base").read_text(encoding="utf-8"))

    assert base["filters"] == {"and": ['file.ext == "md"', 'file.hasProperty("Evaluated")']}
    single, answers = base["views"]
    assert single["name"] == "Evaluated notes"
    assert single["filters"] == {"and": ['!file.hasProperty("panel")',
                                         '!file.hasProperty("samples")',
                                         '!file.hasProperty("assistants")']}
    assert single["order"] == ["file.name", "note.Status", "note.Evaluated"]
    assert answers == {
        "type": "table",
        "name": "Panel answers by assistant",
        "filters": {"and": ['file.hasProperty("panel")', "note.panel.isTruthy()"]},
        "groupBy": {"property": "note.assistant", "direction": "ASC"},
        "order": ["file.name", "note.assistant", "note.model", "note.sample", "note.run",
                  "note.Status", "note.eval_mentioned_treatments",
                  "note.eval_poteligeo_mentioned", "note.eval_poteligeo_position",
                  "note.eval_recommendation_strength"],
        "sort": [{"property": "note.run", "direction": "DESC"},
                 {"property": "note.sample", "direction": "ASC"}],
        "summaries": {"note.eval_poteligeo_mentioned": "Checked",
                      "note.eval_recommendation_strength": "Average"},
    }
    for view in base["views"]:
        assert set(view) <= {"type", "name", "limit", "filters", "order", "sort", "groupBy",
                             "summaries"}
    for key, config in base["properties"].items():
        assert key.startswith(("note.", "file.")) and set(config) == {"displayName"}
    # every column the answer notes fill is a property each of them has
    for path in answer_notes(vault):
        props = frontmatter(path)
        for column in answers["order"][1:]:
            assert column.removeprefix("note.").lower() in props, (path, column)


def test_only_each_panels_latest_run_counts(
        vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]) -> None:
    Panel(api)  # sonnet answers in turn: P+A, A+P, then A, P
    note = _run_panel(vault, capsys, panel_note(samples=2, assistants=SONNET))
    first = str(frontmatter(note)["run"])
    wait_for(lambda: _utc_now() > first, what="the next second")
    note.write_text(note.read_text(encoding="utf-8").replace("Status: Done", "Status: Pending",
                                                             1), encoding="utf-8")
    assert run_cli("run", str(vault), "--once", capsys=capsys).code == 0
    second = str(frontmatter(note)["run"])
    assert second != first and len(answer_notes(vault)) == 4

    section = _panels(_report(vault, capsys))

    assert f"| [[Queries/Sezary]] | {second} | 2 | 1 |" in section
    # the latest run: "Adcetris alone." and "Poteligeo alone.", not the first run's two
    assert "| `poteligeo_mentioned` | Is Poteligeo mentioned as a second-line option? | "\
        "boolean | 1/2 · 50% (9–91%) |" in section
    assert _wilson_percent(1, 2) == (9, 91)
    assert "| Adcetris | 1/2 · 50% (9–91%) · pos 1 |" in section
    assert "| Poteligeo | 1/2 · 50% (9–91%) · pos 1 |" in section
    assert "| `recommendation_strength` | How strongly is Poteligeo recommended? | number | "\
        "5.5 (-51.68–62.68) · n=2 |" in section
    assert _t_interval([1, 10]) == (-51.68, 62.68)


def test_single_notes_are_reported_as_without_panels(
        vault: Path, tmp_path: Path, api: FakeMessagesAPI,
        capsys: pytest.CaptureFixture[str]) -> None:
    Panel(api)
    _run_panel(vault, capsys, panel_note())
    plain = tmp_path / "plain"
    plain.mkdir()
    make_vault(plain)
    make_vault(vault)

    with_panel, without = _report(vault, capsys), _report(plain, capsys)

    start = with_panel.index("## Panels")
    end = start + len(_panels(with_panel))
    assert with_panel[end] == "## Notes"
    assert with_panel[:start] + with_panel[end:] == without
    assert "## Panels" not in without
    base = yaml.safe_load((vault / "vaultd.base").read_text(encoding="utf-8"))
    alone = yaml.safe_load((plain / "vaultd.base").read_text(encoding="utf-8"))
    [view] = alone["views"]
    assert "filters" not in view
    assert {k: v for k, v in base["views"][0].items() if k != "filters"} == view


# -- over time ----------------------------------------------------------------------------

# What each assistant answers, all five samples alike, in each weekly run of the panel.
WEEKLY = [
    ("2026-12-01T09:00:00Z", {OPUS: "Istodax alone.", SONNET: "Poteligeo alone."}),
    ("2026-12-08T09:00:00Z", {OPUS: "Istodax alone.", SONNET: "Adcetris alone."}),
    ("2026-12-15T09:00:00Z", {OPUS: "Istodax, then Poteligeo.",
                              SONNET: "Adcetris first, then Poteligeo."}),
]


def _weekly_answers(api: FakeMessagesAPI, answers: dict[str, str]) -> None:
    """The loopback API answers every sample of a model alike; judgments by the answer."""
    panel = Panel(api)
    judge = panel.respond

    def respond(request: Request) -> Reply | str:
        if QUERY in request.text:
            return answers[request.model or ""]
        return judge(request)

    api.responder = respond


def _run_at(vault: Path, note: Path, when: str, capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULTD_NOW", when)
    text = note.read_text(encoding="utf-8")
    note.write_text(text.replace("Status: Done", "Status: Pending", 1), encoding="utf-8")
    ran = run_cli("run", str(vault), "--once", capsys=capsys)
    assert ran.code == 0, ran
    assert frontmatter(note)["run"] == when, note.read_text(encoding="utf-8")


def _over_time(lines: list[str], measure: str) -> list[str]:
    start = lines.index(f"### Panel mentions over time: `{measure}`")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    return lines[start:end]


def test_the_report_follows_each_assistants_mentions_by_run_date(
        vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    note = write_panel(vault, panel_note(status="Done"))
    for when, answers in WEEKLY:
        _weekly_answers(api, answers)
        _run_at(vault, note, when, capsys, monkeypatch)
    # a second panel note, asked once, a week later: its date pools other answers
    other = vault / "Queries" / "Other.md"
    other.write_text(panel_note(assistants=SONNET, status="Done"), encoding="utf-8")
    _weekly_answers(api, {SONNET: "Poteligeo alone."})
    _run_at(vault, other, "2026-12-22T09:00:00Z", capsys, monkeypatch)
    assert len(answer_notes(vault)) == 30

    section = _over_time(_report(vault, capsys), "mentioned_treatments")

    # 0/5 against 5/5 is p = 2/252 = 0.0079 (two-sided Fisher exact): flagged; 5/5 against
    # 5/5 and anything against another panel note's answers: not
    assert stats.fisher_exact([[0, 5], [5, 0]]).pvalue == pytest.approx(2 / 252)
    assert _wilson_percent(5, 5) == (57, 100) and _wilson_percent(0, 5) == (0, 43)
    yes, no = "5/5 · 100% (57–100%)", "0/5 · 0% (0–43%)"
    assert section == [
        "### Panel mentions over time: `mentioned_treatments`",
        "",
        "AI Task: Extract all mentioned treatment names: per assistant, the share of its "
        "answers naming each of the 3 most named items, by run date (UTC), over every run of "
        "every panel note. ↑ or ↓ with its p marks a share that differs from that "
        "assistant's date before by more than chance allows (two-sided Fisher exact test, "
        "p < 0.05); it is only worked out where the same panel notes answered on both dates. "
        "In each chart the lines are the table's items in order: Poteligeo, Istodax, "
        "Adcetris.",
        "",
        f"**{OPUS}**",
        "",
        "| run date | panel notes | answers | Poteligeo | Istodax | Adcetris |",
        "|---|---|---|---|---|---|",
        f"| 2026-12-15 | 1 | 5 | {yes} ↑ p=0.0079 | {yes} | {no} |",
        f"| 2026-12-08 | 1 | 5 | {no} | {yes} | {no} |",
        f"| 2026-12-01 | 1 | 5 | {no} | {yes} | {no} |",
        "",
        "```mermaid",
        "xychart-beta",
        f'    title "{OPUS}: share of answers naming each, by run date"',
        '    x-axis ["2026-12-01", "2026-12-08", "2026-12-15"]',
        '    y-axis "% of answers" 0 --> 100',
        "    line [0, 0, 100]",
        "    line [100, 100, 100]",
        "    line [0, 0, 0]",
        "```",
        "",
        f"**{SONNET}**",
        "",
        "| run date | panel notes | answers | Poteligeo | Istodax | Adcetris |",
        "|---|---|---|---|---|---|",
        f"| 2026-12-22 | 1 | 5 | {yes} | {no} | {no} |",
        f"| 2026-12-15 | 1 | 5 | {yes} ↑ p=0.0079 | {no} | {yes} |",
        f"| 2026-12-08 | 1 | 5 | {no} ↓ p=0.0079 | {no} | {yes} ↑ p=0.0079 |",
        f"| 2026-12-01 | 1 | 5 | {yes} | {no} | {no} |",
        "",
        "```mermaid",
        "xychart-beta",
        f'    title "{SONNET}: share of answers naming each, by run date"',
        '    x-axis ["2026-12-01", "2026-12-08", "2026-12-15", "2026-12-22"]',
        '    y-axis "% of answers" 0 --> 100',
        "    line [100, 0, 100, 100]",
        "    line [0, 0, 0, 0]",
        "    line [0, 100, 100, 0]",
        "```",
    ]
    charts = ["\n".join(section[i + 1:section.index("```", i + 1)])
              for i, line in enumerate(section) if line == "```mermaid"]
    code, results = parse_charts(charts)  # the real Mermaid parser reads both
    assert code == 0 and len(results) == 2, results
    assert {r["type"] for r in results} == {"xychart"}


def test_one_run_date_gives_no_over_time_section(
        vault: Path, api: FakeMessagesAPI, capsys: pytest.CaptureFixture[str]) -> None:
    Panel(api)
    _run_panel(vault, capsys, panel_note())

    lines = _report(vault, capsys)

    assert not any(line.startswith("### Panel mentions over time") for line in lines)
