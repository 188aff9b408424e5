"""The pure core: notes, measures, the graph and model replies, read as the format says."""

from __future__ import annotations

import pytest

from vaultd.errors import FormatError, GraphError
from vaultd.evaluate.graph import plan
from vaultd.evaluate.prepare import check_note
from vaultd.evaluate.reply import read_reply
from vaultd.note.measures import parse_measures
from vaultd.note.text import parse

from .notes import SEED, note_with_measures


def test_seed_note_structure() -> None:
    note = parse(SEED)
    assert note.is_pending
    kinds = [c.kind for c in note.callouts]
    assert kinds[:3] == ["query", "answer", "measures"]
    assert kinds[3:] == ["evaluation", "evaluation-result"] * 4
    assert note.block_text("query", ("text",)) == (
        "My Sezary Syndrome is resistant to first-line treatments. "
        "What are the best second-line treatment options?"
    )
    assert note.block_text("answer", ("text",)).startswith("I'm sorry you're dealing with this.")


def test_seed_measures_and_plan() -> None:
    checked = check_note(parse(SEED))
    measures = checked.plan.measures
    assert [m.id for m in measures] == [
        "mentioned_treatments", "poteligeo_mentioned", "poteligeo_position",
        "recommendation_strength",
    ]
    assert measures[1].params == {"target": "Poteligeo"}
    assert measures[1].input == ("mentioned_treatments",)
    assert measures[0].input == ("answer",)
    assert measures[2].logic == (
        "const index = input.indexOf(params.target); return index === -1 ? 'N/A' : index + 1;"
    )
    assert measures[0].line == 79  # the `* ---` line in the seed
    assert checked.plan.depends_on == {
        "mentioned_treatments": (), "recommendation_strength": (),
        "poteligeo_mentioned": ("mentioned_treatments",),
        "poteligeo_position": ("mentioned_treatments",),
    }


@pytest.mark.parametrize(
    "text",
    [
        "Status: pending", "status: Pending", "STATUS: 'Pending'", 'Status: "PENDING"',
        "Status: Pending  # set by hand",
    ],
)
def test_pending_matched_case_insensitively(text: str) -> None:
    assert parse(f"---\n{text}\n---\nbody\n").is_pending


@pytest.mark.parametrize(
    "text",
    [
        "no frontmatter\nStatus: Pending\n",
        "---\nStatus: Done\n---\nStatus: Pending\n",
        "---\nStatus: Pending\n",  # never closed: not frontmatter
        "```\n---\nStatus: Pending\n---\n```\n",
        "---\ntags:\n  - Status: Pending\n---\n",
    ],
)
def test_not_pending(text: str) -> None:
    assert not parse(text).is_pending


def test_callouts_inside_a_code_fence_are_prose() -> None:
    text = "---\nStatus: Pending\n---\n````md\n> [!query]\n> ```query-text\n> hi\n> ```\n````\n"
    assert parse(text).callouts == ()


def test_callout_fold_title_and_longer_fence() -> None:
    text = "> [!Answer]- My title\n> ````answer-text\n> a\n> ```\n> b\n> ````\n"
    callout = parse(text).callouts[0]
    assert (callout.kind, callout.fold, callout.title) == ("answer", "-", "My title")
    assert callout.block(("text",)).content == "a\n```\nb"


def test_measures_md_dotted_keys_lists_and_escapes() -> None:
    content = "\n".join([
        "* ---",
        "  * id: both",
        "  * type: programmatic",
        "  * input: [a, b]",
        "  * params.target.name: \"Po\\\"t\"",
        "  * params.limit: 3",
        '  * logic: "return input;"',
        "* ---",
        "  * id: a",
        "  * type: ai",
        "  * prompt: 'Say hi'",
        "  * max_tokens: 50",
        "* ---",
        "  * id: b",
        "  * type: programmatic",
        "  * input:",
        "    * a",
        "    * query",
        "  * logic: return 1",
    ])
    measures, problems = parse_measures(content, "md", 10)
    assert problems == []
    both, a, b = measures
    assert both.input == ("a", "b") and both.input_is_list
    assert both.params == {"target": {"name": 'Po"t'}, "limit": 3}
    assert a.max_tokens == 50 and a.line == 17
    assert b.input == ("a", "query") and b.input_is_list


def test_measures_yaml_form_matches_md() -> None:
    content = "\n".join([
        "- id: count",
        "  type: programmatic",
        "  input: answer",
        "  params: {target: Poteligeo}",
        "  logic: return input.length;",
    ])
    (measure,), problems = parse_measures(content, "yaml", 5)
    assert problems == []
    assert measure.id == "count" and measure.params == {"target": "Poteligeo"}
    assert measure.line == 5 and not measure.input_is_list


def test_every_measure_problem_is_reported_with_its_line() -> None:
    note = parse(note_with_measures([
        "* ---",
        "  * id: bad id",
        "  * type: ai",
        "* ---",
        "  * id: x",
        "  * type: magic",
        "* ---",
        "  * type: programmatic",
        "  * logic: return 1",
        "* ---",
        "  * id: y",
        "  * type: programmatic",
        "  * promt: oops",
    ]))
    with pytest.raises(FormatError) as caught:
        check_note(note)
    got = [(p.line, p.message) for p in caught.value.problems]
    first = note.first("measures").block(("md",)).first_line + 1
    assert (first + 1, "measure `bad id`: field `id`: `bad id` is not a valid id (use letters, "
            "digits and _)") in got
    assert (first, "measure `bad id`: an ai measure needs a `prompt`") in got
    assert (first + 5, "measure `x`: unknown type `magic`") in got
    assert (first + 6, "measure: missing required field `id`") in got
    assert any(line == first + 12 and "unknown field `promt`" in m for line, m in got)
    assert any(line == first + 9 and "needs `logic`" in m for line, m in got)


def test_graph_errors_name_cycles_unknown_and_duplicate_ids() -> None:
    content = "\n".join([
        "- {id: a, type: programmatic, input: c, logic: return 1}",
        "- {id: b, type: programmatic, input: a, logic: return 1}",
        "- {id: c, type: programmatic, input: b, logic: return 1}",
        "- {id: d, type: programmatic, input: nowhere, logic: return 1}",
        "- {id: a, type: programmatic, logic: return 1}",
        "- {id: e, type: programmatic, input: [e], logic: return 1}",
    ])
    measures, problems = parse_measures(content, "yaml", 1)
    assert problems == []
    with pytest.raises(GraphError) as caught:
        plan(measures)
    messages = [(p.line, p.message) for p in caught.value.problems]
    assert (1, "the measures form a cycle: a → c → b → a") in messages
    assert (4, "measure `d`: unknown input `nowhere`") in messages
    assert (5, "duplicate id `a` (first used on line 1)") in messages
    assert (6, "measure `e` uses itself as input") in messages


def test_reserved_ids_are_refused() -> None:
    _, problems = parse_measures("- {id: answer, type: programmatic, logic: x}", "yaml", 1)
    assert [p.message for p in problems] == [
        "measure `answer`: field `id`: `answer` is reserved (it names the note's answer)"
    ]


@pytest.mark.parametrize(
    ("reply", "value", "comment"),
    [
        ('["Poteligeo"]', ["Poteligeo"], None),
        ('{"response": 9, "comment": "Named first."}', 9, "Named first."),
        ('Here you go:\n```json\n["A", "B"]\n```\nDone.', ["A", "B"], None),
        ('Sure! {"response": true} is my answer', True, None),
        ("I would say seven.", "I would say seven.", None),
        ("  9  ", 9, None),
        ('{"other": 1}', {"other": 1}, None),
        ("Not JSON [but brackets", "Not JSON [but brackets", None),
    ],
)
def test_model_replies_become_values(reply: str, value: object, comment: str | None) -> None:
    reading = read_reply(reply)
    assert reading.value == value
    assert reading.comment == comment


def test_note_with_neither_query_nor_answer_is_an_error() -> None:
    text = "---\nStatus: Pending\n---\n> [!measures]\n> ```measures-yaml\n" \
           "> - {id: a, type: programmatic, logic: return 1}\n> ```\n"
    with pytest.raises(FormatError) as caught:
        check_note(parse(text))
    assert [p.message for p in caught.value.problems] == [
        "the note has neither a query nor an answer"
    ]


def test_notes_sharing_a_measures_block_keep_their_own_lines() -> None:
    """Measures blocks are read once per content; lines still follow each note."""
    lines = ["* ---", "  * id: size", "  * type: programmatic", "  * logic: return 1"]
    short = note_with_measures(lines, answer="One line.")
    longer = note_with_measures(lines, answer="One line.\n> Two lines.\n> Three lines.")
    first = check_note(parse(short)).plan.measures[0]
    second = check_note(parse(longer)).plan.measures[0]
    assert short.splitlines()[first.line - 1] == "> * ---"
    assert longer.splitlines()[second.line - 1] == "> * ---"
    assert second.line == first.line + 2


def test_problems_in_a_shared_block_name_each_note_s_own_line() -> None:
    lines = ["* ---", "  * id: size", "  * id: again", "  * type: programmatic",
             "  * logic: return 1"]
    for answer in ("One line.", "One line.\n> Two lines."):
        text = note_with_measures(lines, answer=answer)
        with pytest.raises(FormatError) as caught:
            check_note(parse(text))
        [problem] = [p for p in caught.value.problems if "given twice" in p.message]
        assert text.splitlines()[problem.line - 1] == ">   * id: again"
        first = text.splitlines().index(">   * id: size") + 1
        assert f"(first on line {first})" in problem.message
