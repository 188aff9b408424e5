"""The note format at its edges: exact bytes out, exact problems (line, message) found.

Each test reads a small note the way a user might really write it (odd spacing, other
line endings, comments, values that look like structure) and pins what vaultd reads from
it, or the exact text it writes back.
"""

from __future__ import annotations

import time

import pytest

from vaultd.errors import FormatError, GraphError
from vaultd.evaluate.graph import plan
from vaultd.evaluate.prepare import check_note
from vaultd.evaluate.reply import read_reply
from vaultd.note.measures import Measure, parse_measures
from vaultd.note.outcomes import Failure, Skipped, Success
from vaultd.note.render import (
    ERROR_TITLE,
    code_callout,
    error_callout,
    evaluation_block,
    evaluation_pair,
    fence_for,
)
from vaultd.note.splice import Changes, apply
from vaultd.note.text import Note, dominant_newline, parse, split_lines

PAIR_A = evaluation_pair("a", "programmatic", Success(1))
PAIR_B = evaluation_pair("b", "ai", Success("yes"))


def nl(text: str, newline: str) -> str:
    """``text`` (written with ``\\n``) with another line ending."""
    return text.replace("\n", newline)


def problems_of(note: Note, hints: bool = False) -> list[tuple[int | None, str]]:
    with pytest.raises(FormatError) as caught:
        check_note(note)
    return [(p.line, p.text if hints else p.message) for p in caught.value.problems]


def measures_note(measure_lines: list[str], fence: str = "```measures-md") -> str:
    """A pending note; its measures block's first content line is line 11."""
    body = "".join(f"> {line}\n" for line in measure_lines)
    return (
        "---\nStatus: Pending\n---\n"  # 1-3
        "> [!answer]\n> ```answer-text\n> An answer.\n> ```\n\n"  # 4-8
        f"> [!measures]\n> {fence}\n{body}> ```\n"  # 9-10, 11...
    )


# -- callouts in every valid spelling ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "fold", "title", "info", "content"),
    [
        (">[!query]\n>```query-text\n>hi\n>```\n", "query", "", "", "query-text", "hi"),
        ("> [!QUERY]+ My title  \n> ```Query-Text\n> hi\n> ```\n",
         "query", "+", "My title", "Query-Text", "hi"),
        ("   > [!query]- folded\n   > ~~~query-text\n   > a\n   > ```\n   > ~~~\n",
         "query", "-", "folded", "query-text", "a\n```"),
        ("> [!query]\n> ````query-text\n> ```\n> ~~~~\n> ````\n",
         "query", "", "", "query-text", "```\n~~~~"),
        ("> [!query]\n> ~~~~ query-text\n> a\n> ~~~\n> ~~~~~~  \n",
         "query", "", "", "query-text", "a\n~~~"),
        # the fence indented inside the callout: that much indentation leaves each line
        ("> [!query]\n>   ```query-text\n>   a\n>      b\n>  c\n>    ```\n",
         "query", "", "", "query-text", "a\n   b\nc"),
        # text before the block, and a second block after it
        ("> [!answer]\n> Some words.\n> ```answer-text\n> x\n> ```\n> ```other\n> y\n> ```\n",
         "answer", "", "", "answer-text", "x"),
    ],
)
def test_callout_spellings(text: str, kind: str, fold: str, title: str, info: str,
                           content: str) -> None:
    (callout,) = parse(text).callouts
    assert (callout.kind, callout.fold, callout.title) == (kind, fold, title)
    block = callout.block(("text",))
    assert block is not None
    assert (block.info, block.content, block.closed) == (info, content, True)


def test_backticks_in_the_info_string_make_no_fence() -> None:
    (callout,) = parse("> [!query]\n> ```query`text\n> ```query-text\n> a\n> ```\n").callouts
    assert [(b.info, b.content) for b in callout.blocks] == [("query-text", "a")]


def test_a_closing_fence_allows_only_spaces_and_tabs_after_it() -> None:
    text = "> [!query]\n> ```query-text\n> a\n> ```\u00a0\n> b\n> ``` \t\n"
    (callout,) = parse(text).callouts
    assert [(b.content, b.closed) for b in callout.blocks] == [("a\n```\u00a0\nb", True)]


def test_an_unclosed_block_ends_with_its_callout() -> None:
    text = "> [!query]\n> ```query-text\n> a\n\n> b\n> ```\n"
    (first,) = parse(text).callouts  # "> b" heads no callout
    assert (first.end, first.blocks[0].content, first.blocks[0].closed) == (3, "a", False)


def test_four_spaces_is_code_not_a_callout() -> None:
    assert parse("    > [!query]\n    > ```query-text\n    > a\n    > ```\n").callouts == ()


@pytest.mark.parametrize("fence", ["```", "~~~", "````md", "~~~~~"])
def test_a_top_level_fence_hides_callouts(fence: str) -> None:
    closing = fence.rstrip("md")
    text = (f"{fence}\n> [!measures]\n> ```measures-md\n> ```\n{closing}\n"
            "> [!query]\n> ```query-text\n> q\n> ```\n")
    assert [(c.kind, c.start) for c in parse(text).callouts] == [("query", 5)]


def test_a_shorter_or_other_fence_does_not_end_a_top_level_fence() -> None:
    text = "````\n```\n~~~~\n> [!query]\n````\n> [!answer]\n"
    assert [(c.kind, c.start) for c in parse(text).callouts] == [("answer", 5)]


# -- line endings, BOM, no final newline -----------------------------------------------


def test_split_lines_keeps_every_ending() -> None:
    text = "a\r\nb\rc\n\r\n\rd"
    assert split_lines(text) == ("a\r\n", "b\r", "c\n", "\r\n", "\r", "d")
    assert "".join(split_lines(text)) == text


@pytest.mark.parametrize(
    ("text", "newline"),
    [("a\nb\r\nc\r\n", "\r\n"), ("a\nb\r\nc", "\n"), ("a\rb\rc\n", "\r"), ("x", "\n"),
     ("a\rb\nc\r\nd", "\n")],
)
def test_dominant_newline(text: str, newline: str) -> None:
    assert dominant_newline(split_lines(text)) == newline


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_block_content_is_the_same_whatever_the_line_endings(newline: str) -> None:
    text = nl("---\nStatus: Pending\n---\n> [!query]\n> ```query-text\n> a  \n> \tb\n> ```\n",
              newline)
    note = parse(text)
    assert note.is_pending
    assert note.block_text("query", ("text",)) == "a  \n\tb"


def test_bom_before_frontmatter() -> None:
    text = "\ufeff---\r\nStatus: Pending\r\n---\r\nbody"
    note = parse(text)
    assert note.is_pending
    assert apply(note, Changes(status="Done")) == "\ufeff---\r\nStatus: Done\r\n---\r\nbody"


# -- frontmatter: Status in any spelling, comments, multi-line values ---------------------


@pytest.mark.parametrize(
    ("line", "written"),
    [
        ("Status: Pending", "Status: Done"),
        ("status: pending", "status: Done"),
        ("STATUS:   PENDING", "STATUS:   Done"),
        ("'Status': Pending", "'Status': Done"),
        ('"status": "Pending"', '"status": Done'),
        ("Status: Pending   ", "Status: Done   "),
        ("Status: Pending\t", "Status: Done\t"),
        ("Status: Pending # set me  ", "Status: Done # set me  "),
        ("Status: 'Pending' # keep this", "Status: Done # keep this"),
        ('Status: "Pend\\"ing #x" # keep', 'Status: Done # keep'),
        ("Status:", "Status: Done"),
        ("Status: # only a comment", "Status: Done # only a comment"),
    ],
)
def test_status_is_rewritten_as_spelled(line: str, written: str) -> None:
    text = f"---\ntitle: x\n{line}\ntags: [a]\n---\nStatus: Pending\n"
    assert apply(parse(text), Changes(status="Done")) == (
        f"---\ntitle: x\n{written}\ntags: [a]\n---\nStatus: Pending\n"
    )


@pytest.mark.parametrize(
    "block",
    [
        "Status:\n  Pending\n",
        "Status: >-\n  Pending\n",
        "Status: |-\n  Pending\n",
        "Status: 'Pend\n  ing'\n",
        "Status:\n  # why\n  Pending\n",
    ],
)
def test_a_multi_line_status_is_read_and_rewritten_on_one_line(block: str) -> None:
    text = f"---\n# top comment\n{block}# after\nnext: 1\n---\nbody\n"
    note = parse(text)
    assert note.is_pending == ("ing'" not in block)
    assert apply(note, Changes(status="Done")) == (
        "---\n# top comment\nStatus: Done\n# after\nnext: 1\n---\nbody\n"
    )


def test_a_multi_line_value_is_a_value_not_keys() -> None:
    text = "---\ntags:\n  - a\n  - Status: x\ndesc: |\n  Status: Pending\nStatus: Pending\n---\n"
    note = parse(text)
    assert note.properties["tags"] == ["a", {"Status": "x"}]
    assert note.properties["desc"] == "Status: Pending\n"
    assert note.is_pending
    assert apply(note, Changes(status="Done", properties={"desc": None})) == (
        "---\ntags:\n  - a\n  - Status: x\nStatus: Done\n---\n"
    )


def test_duplicate_keys_the_last_one_counts_and_is_the_one_rewritten() -> None:
    text = "---\nStatus: Done\nstatus: Pending\n---\n"
    note = parse(text)
    assert note.is_pending
    assert apply(note, Changes(status="Processing")) == (
        "---\nStatus: Done\nstatus: Processing\n---\n"
    )


def test_properties_keep_their_comments_order_and_own_line_endings() -> None:
    text = (
        "---\n"
        "# comment one\n"
        "status: pending\r\n"
        "Error: old # vaultd's\n"
        "# comment two\n"
        "aliases:\n  - x\n"
        "---\n"
        "Body line\n"
    )
    got = apply(parse(text), Changes(status="Done",
                                     properties={"Error": None, "Evaluated": "2024-01-01"}))
    assert got == (
        "---\n# comment one\nstatus: Done\r\n# comment two\naliases:\n  - x\n"
        "Evaluated: 2024-01-01\n---\nBody line\n"
    )


def test_new_properties_take_a_lone_cr_note_s_line_ending() -> None:
    text = "---\rStatus: Pending\rtitle: t\r---\rbody"
    got = apply(parse(text), Changes(status="Done", properties={"Evaluated": "x"}))
    assert got == "---\rStatus: Done\rtitle: t\rEvaluated: x\r---\rbody"


def test_an_existing_vaultd_property_is_rewritten_in_place() -> None:
    text = "---\nStatus: Pending\nevaluated: old  # stamp\ntitle: t\n---\n"
    assert apply(parse(text), Changes(properties={"Evaluated": "new"})) == (
        "---\nStatus: Pending\nevaluated: new  # stamp\ntitle: t\n---\n"
    )


# -- evaluation pairs: replaced where they stand, prose kept ---------------------------


def test_pairs_are_appended_to_a_note_without_a_final_newline() -> None:
    text = "---\r\nStatus: Pending\r\n---\r\nLast words.  "
    got = apply(parse(text), Changes(results=evaluation_block([PAIR_A])))
    assert got == text + nl("\n\n" + "\n".join(PAIR_A), "\r\n")
    assert not got.endswith("\n")


def test_pairs_scattered_between_prose_collapse_into_the_first_place() -> None:
    old_a = evaluation_pair("a", "programmatic", Success(0))
    old_b = evaluation_pair("b", "ai", Failure("boom"))
    text = "\n".join([
        "---", "Status: Pending", "---", "Intro.", "",
        *old_a, "", "Prose between, kept.", "\t", "\u3000", "", *old_b, "", "Outro.  ",
    ])
    got = apply(parse(text), Changes(results=evaluation_block([PAIR_A, PAIR_B])))
    assert got == "\n".join([
        "---", "Status: Pending", "---", "Intro.", "",
        *PAIR_A, "", *PAIR_B, "", "Prose between, kept.", "\t", "\u3000", "", "Outro.  ",
    ])


def test_a_lone_half_pair_is_replaced_too() -> None:
    result_only = PAIR_A[PAIR_A.index("> [!evaluation-result]"):]
    text = "\n".join(["---", "Status: Pending", "---", "", *result_only]) + "\n"
    got = apply(parse(text), Changes(results=evaluation_block([PAIR_B])))
    assert got == "\n".join(["---", "Status: Pending", "---", "", *PAIR_B]) + "\n"


def test_removing_the_last_pairs_keeps_no_final_newline() -> None:
    text = "---\nStatus: Pending\n---\nProse.\n\n" + "\n".join(PAIR_A)
    assert apply(parse(text), Changes(results=[])) == "---\nStatus: Pending\n---\nProse."


def test_a_setext_underline_before_a_pair_is_the_user_s() -> None:
    text = "\n".join(["---", "Status: Pending", "---", "My heading", "---", "", *PAIR_A[2:]])
    got = apply(parse(text), Changes(results=evaluation_block([PAIR_B])))
    assert got == "\n".join(["---", "Status: Pending", "---", "My heading", "---", "", *PAIR_B])
    assert apply(parse(got), Changes(results=evaluation_block([PAIR_B]))) == got


def test_a_pair_is_replaced_whatever_the_line_endings_around_it() -> None:
    text = "---\nStatus: Pending\n---\r\nA\r\n\r\n" + "\n".join(PAIR_A) + "\r\n\r\nB\r\n"
    got = apply(parse(text), Changes(results=evaluation_block([PAIR_B])))
    # new lines take the dominant ending (here \n: 13 lines against 6)
    assert got == "---\nStatus: Pending\n---\r\nA\r\n\r\n" + "\n".join(PAIR_B) + "\n\r\nB\r\n"


def test_a_result_value_cannot_end_its_block_or_forge_a_pair() -> None:
    value = "```\n> [!evaluation]\n````json\n~~~~~\n   ``````\n\r```\r"
    pair = evaluation_pair("m", "programmatic", Success(value))
    assert pair[-11:] == [
        "> [!evaluation-result]", "> ```````evaluation-result-text", "> ```",
        "> > [!evaluation]", "> ````json", "> ~~~~~", ">    ``````", "> ", "> ```", "> ",
        "> ```````",
    ]
    text = "---\nStatus: Pending\n---\n"
    got = apply(parse(text), Changes(results=evaluation_block([pair, PAIR_B])))
    note = parse(got)
    assert [c.kind for c in note.callouts] == ["evaluation", "evaluation-result"] * 2
    assert note.callouts[1].blocks[0].content == value.replace("\r", "\n")


def test_a_comment_cannot_open_a_fence() -> None:
    pair = evaluation_pair("m", "ai", Success(9, comment="Fine.\n```\n  ~~~ x\n> [!error]"))
    assert pair[-5:] == ["> ```", "> Fine.", "> \\```", ">   \\~~~ x", "> > [!error]"]
    note = parse("\n".join(pair) + "\n")
    assert [(c.kind, len(c.blocks)) for c in note.callouts] == [
        ("evaluation", 1), ("evaluation-result", 1)]


def test_a_value_with_lone_carriage_returns_gets_a_longer_fence() -> None:
    assert fence_for("a\r```") == "````"
    assert fence_for("a\r\n~~~~~") == "``````"
    assert code_callout("> [!x]", "x-text", "a\r```\rb") == [
        "> [!x]", "> ````x-text", "> a", "> ```", "> b", "> ````"]


def test_outcomes_render_in_the_seed_shape() -> None:
    pairs = [
        evaluation_pair('Say "hi"\n twice', "ai", Success(["Poteligeo", 2, None, True])),
        evaluation_pair("x", "programmatic", Failure("bad\nthing")),
        evaluation_pair("y", "programmatic", Skipped("input `x` failed")),
        evaluation_pair("z", "programmatic", Success({"a": [1, "é"]})),
    ]
    assert [p[4] for p in pairs] == [
        '> - measure: "Say \\"hi\\" twice"', '> - measure: "x"', '> - measure: "y"',
        '> - measure: "z"']
    assert [p[10:-1] for p in pairs] == [
        ["> Poteligeo", "> 2", "> null", "> true"], ["> Error: bad thing"],
        ["> Skipped: input `x` failed"], ['> {"a":[1,"é"]}']]


# -- vaultd's [!error] callout ---------------------------------------------------------


def test_the_error_callout_is_replaced_then_cleared_and_a_user_error_callout_kept() -> None:
    user = ["> [!error] My own error notes", "> keep me"]
    text = "\n".join(["---", "Status: Pending", "---", "Intro.", "", *user, ""]) + "\n"
    first = apply(parse(text), Changes(error=error_callout(["line 3: a"])))
    assert first == text + "\n".join(
        ["", "***", "", f"> [!error] {ERROR_TITLE}", "> ```error-text", "> line 3: a", "> ```",
         ""])
    second = apply(parse(first), Changes(error=error_callout(["b", "c"])))
    assert second == text + "\n".join(
        ["", "***", "", f"> [!error] {ERROR_TITLE}", "> ```error-text", "> b", "> c", "> ```",
         ""])
    cleared = apply(parse(second), Changes(status="Done", results=PAIR_A, clear_error=True))
    assert cleared == text.replace("Pending", "Done") + "\n".join(PAIR_A) + "\n"


def test_results_and_an_error_callout_side_by_side() -> None:
    text = "\n".join(["---", "Status: Error", "---", *PAIR_A, "",
                      *error_callout(["line 9: x"]), "", "Tail."]) + "\n"
    got = apply(parse(text), Changes(results=PAIR_B, clear_error=True))
    assert got == "\n".join(["---", "Status: Error", "---", *PAIR_B, "", "Tail."]) + "\n"


# -- the generated answer --------------------------------------------------------------


def test_a_generated_answer_goes_after_the_query_in_the_note_s_line_endings() -> None:
    text = "---\r\nStatus: Pending\r\n---\r\n>[!QUERY]\r\n>```query-text\r\n>Why?\r\n>```"
    got = apply(parse(text), Changes(answer="Because\n```\nso."))
    assert got == text + nl(
        "\n\n***\n\n> [!answer]\n> ````answer-text\n> Because\n> ```\n> so.\n> ````", "\r\n")
    assert parse(got).block_text("answer", ("text",)) == "Because\n```\nso."


def test_a_generated_answer_fills_an_empty_answer_callout_and_keeps_the_rest() -> None:
    text = ("---\nStatus: Pending\n---\n> [!query]\n> ```query-text\n> Why?\n> ```\n\n"
            ">[!Answer]- Folded\n>Said by:\n>  ~~~answer-text\n>  ~~~\n>My note.\n\nEnd")
    got = apply(parse(text), Changes(answer="Because.\n~~~"))
    assert got == text.replace(">  ~~~answer-text\n>  ~~~\n",
                               "> ````answer-text\n> Because.\n> ~~~\n> ````\n")
    unclosed = "---\nStatus: Pending\n---\n> [!answer]\n> ```answer-text"
    assert apply(parse(unclosed), Changes(answer="A")) == unclosed + "\n> A\n> ```"


# -- check_note: measures-md and measures-yaml problems, with lines ---------------------


def test_measures_md_continuation_lines_and_nested_inputs() -> None:
    note = parse(measures_note([
        "* ---",
        "  * id: joined",
        "  * type: programmatic",
        "  * description: \"A long",
        "    description\"",
        "  * logic: return",
        "    input.length;",
        "  * input:",
        "    * answer",
        "    * query",
        "* ---",
        "  * params.a.b: 'x'",
        "  * id: second",
        "  * type: ai",
        "  * params.a.c: \"\\u00e9\\t\"",
        "  * prompt: 'It''s {{a.b}}'",
    ]) + "\n> [!query]\n> ```query-text\n> Q\n> ```\n")
    checked = check_note(note)
    first, second = checked.plan.measures
    assert (first.line, first.description, first.logic) == (11, "A long description",
                                                             "return input.length;")
    assert (first.input, first.input_is_list) == (("answer", "query"), True)
    assert (second.line, second.params, second.prompt) == (
        21, {"a": {"b": "x", "c": "é\t"}}, "It's {{a.b}}")


@pytest.mark.parametrize("fmt", ["md", "yaml"])
def test_ids_and_text_are_read_as_written_not_as_yaml_1_1(fmt: str) -> None:
    fields = [
        [("id", "on"), ("type", "ai"), ("prompt", "12:30"), ("description", "Yes")],
        [("id", "1"), ("type", "programmatic"), ("input", "[on, answer]"),
         ("logic", "return 0x10"), ("description", "2024-01-01"), ("params.n", "0x10")],
        [("id", "no"), ("type", "programmatic"), ("input", "1"), ("logic", "return 1.50")],
    ]
    if fmt == "md":
        lines = [line for measure in fields
                 for line in ["* ---", *(f"  * {key}: {value}" for key, value in measure)]]
    else:
        lines = [f"{'- ' if i == 0 else '  '}{key.replace('params.n', 'params')}: "
                 f"{'{n: 0x10}' if key == 'params.n' else value}"
                 for measure in fields for i, (key, value) in enumerate(measure)]
    measures, problems = parse_measures("\n".join(lines), fmt, 1)
    assert problems == []
    assert [(m.id, m.input, m.description, m.prompt or m.logic, m.params) for m in measures] == [
        ("on", ("answer",), "Yes", "12:30", {}),
        ("1", ("on", "answer"), "2024-01-01", "return 0x10", {"n": 16}),
        ("no", ("1",), "", "return 1.50", {}),
    ]


def test_measures_md_problems_each_on_its_line() -> None:
    note = parse(measures_note([
        "* ---",  # 11
        "  * id: a",
        "  * type: programmatic",
        "  * logic: \"return",
        "    \\q\"",  # 15: a bad escape on the continuation line
        "* ---",  # 16
        "  * id: b",
        "  * type: programmatic",
        "  * logic: x",
        "  * input:",
        "    * answer",
        "    * [unclosed",  # 22
        "  * params.t: 1",
        "  * params.t: 2",  # 24
        "  * id: b2",  # 25
        "* ---",  # 26
        "  * id: c",
        "  * type: ai",
        "  * prompt: p",
        "  * input: answer",
        "    * query",  # 31
        "  * model: x: y",  # 32
    ]))
    assert problems_of(note) == [
        (15, "field `logic`: not a valid YAML value (found unknown escape character 'q')"),
        (22, "field `input`: not a valid YAML value (expected ',' or ']', but got "
             "'<stream end>')"),
        (24, "field `params.t` is given twice (first on line 23)"),
        (25, "field `id` is given twice (first on line 17)"),
        (31, "field `input` has a value and nested items (give one or the other)"),
        (32, "measure `c`: field `model`: Input should be a valid string"),
    ]


def test_measures_md_structure_problems() -> None:
    note = parse(measures_note([
        "Some text first",  # 11
        "* ---",
        "  * id: a",
        "  * type: programmatic",
        "  * logic: return 1",
        "  * not a field",  # 16
        "  * 1x: y",  # 17
        "* item",  # 18
        "  * id: lost",
        "* ---",  # 20
        "* ---",  # 21
        "  * id: d",
        "  * type: javascript",  # 23
        "  * logic: x",
        "  * max_tokens: 0",  # 25
    ]) + "\n> [!query]\n> ```query-text\n> Q\n> ```\n")
    assert problems_of(note, hints=True) == [
        (11, "expected `* ---` to start a measure"),
        (16, "expected `* key: value`, found `not a field`"),
        (17, "`1x` is not a valid field name (known: id, type, description, input, params, "
             "prompt, logic, model, max_tokens)"),
        (18, "expected `* ---` to start a measure"),
        (20, "measure: missing required field `id` (add `* id: ...`, a name of letters, "
             "digits and _)"),
        (20, "measure: missing required field `type` (type is ai or programmatic)"),
        (23, "measure `d`: unknown type `javascript` (type is ai or programmatic)"),
        (25, "measure `d`: field `max_tokens`: `0` is not a whole number above 0 (e.g. "
             "`* max_tokens: 1024`)"),
    ]


def test_measures_yaml_problems_each_on_its_line() -> None:
    note = parse(measures_note([
        "- id: a",  # 11
        "  type: programmatic",
        "  logic: \"x\u2028y\u0085z\"",  # YAML counts these as line breaks; the note does not
        "- id: b",  # 14
        "  type: programmatic",
        "  logic: !js return 1",  # 16
        "- just text",  # 17
        "- id: c",  # 18
        "  type: ai",
        "  prompt: p",
        "  prompt: q",  # 21
        "  temperature: 1",  # 22
        "  promt: r",  # 23
    ], fence="```measures-yaml"))
    assert problems_of(note, hints=True) == [
        (16, "field `logic`: could not determine a constructor for the tag '!js'"),
        (17, "each measure must be a mapping of fields"),
        (21, "field `prompt` is given twice (first on line 20) (remove one of them)"),
        (22, "unknown field `temperature` (known: id, type, description, input, params, "
             "prompt, logic, model, max_tokens)"),
        (23, "unknown field `promt` (did you mean `prompt`?)"),
    ]


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (["- id: a", "  type: ai", "  prompt: \"bad \\q\""],
         (13, "the measures are not valid YAML: found unknown escape character 'q'")),
        (["- id: a", "  type: [ai", "- id: b"],
         (13, "the measures are not valid YAML: expected ',' or ']', but got ':'")),
        (["id: a", "type: ai"], (11, "the measures must be a YAML list of mappings")),
        (["\u2028", "- [1", "x: 1"],  # PyYAML counts U+2028 as a line break; the note does not
         (13, "the measures are not valid YAML: expected ',' or ']', but got ':'")),
        ([], (10, "the measures block lists no measures")),
    ],
)
def test_measures_yaml_syntax_errors(lines: list[str], problem: tuple[int, str]) -> None:
    note = parse(measures_note(lines, fence="```measures-yaml"))
    assert problems_of(note) == [problem]


def test_note_level_problems() -> None:
    text = (
        "---\nStatus: Pending\n---\n"
        "> [!query]\n> ```query-md\n> q\n> ```\n\n"  # 4
        "> [!measures]\n> ```measures-json\n> []\n> ```\n\n"  # 9
        "> [!measures]\n> ```measures-yaml\n> - {id: a, type: ai, prompt: p}\n> ```\n"  # 14
        "\n> [!measures]\n> ```measures-md\n> * ---\n> ```\n"  # 19
    )
    # A callout without vaultd's typed block (query-md, measures-json) is the user's text.
    assert problems_of(parse(text)) == [
        (None, "the note has neither a query nor an answer"),
        (19, "a second [!measures] callout (only one is allowed)"),
    ]
    assert problems_of(parse("---\nStatus: Pending\n---\nNothing.\n")) == [
        (None, "no [!measures] callout"),
        (None, "the note has neither a query nor an answer"),
    ]


def test_an_input_naming_a_broken_measure_is_not_also_unknown() -> None:
    note = parse(measures_note([
        "* ---",  # 11
        "  * id: a",
        "  * type: ai",
        "* ---",  # 14
        "  * id: b",
        "  * type: programmatic",
        "  * input: [a, nowhere]",
        "  * logic: \"bad \\q\"",  # 18
        "* ---",  # 19
        "  * id: c",
        "  * type: programmatic",
        "  * input: b",
        "  * logic: return input",
    ]))
    assert problems_of(note) == [
        (11, "measure `a`: an ai measure needs a `prompt`"),
        (18, "field `logic`: not a valid YAML value (found unknown escape character 'q')"),
    ]
    with pytest.raises(GraphError) as caught:
        plan([programmatic("d", 1, "a", "zz")], unreadable={"a"})
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (1, "measure `d`: unknown input `zz`")]


# -- the graph at scale ----------------------------------------------------------------


def programmatic(name: str, line: int, *inputs: str) -> Measure:
    return Measure(id=name, type="programmatic", logic="return 1", line=line,
                   input=inputs or ("answer",))


def test_a_long_chain_plans_quickly_without_recursion() -> None:
    count = 5000
    chain = [programmatic("m0", 1)] + [
        programmatic(f"m{i}", i + 1, f"m{i - 1}") for i in range(1, count)]
    started = time.perf_counter()
    result = plan(reversed(chain))
    assert time.perf_counter() - started < 2
    assert all(result.depends_on[f"m{i}"] == (f"m{i - 1}",) for i in range(1, count))
    assert result.dependents["m0"] == ("m1",) and result.dependents[f"m{count - 1}"] == ()


def test_a_wide_graph_keeps_declared_order_quickly() -> None:
    count = 5000
    measures = [programmatic(f"m{i}", i + 1, *(("m0",) if i % 2 else ())) for i in
                range(count)]
    measures[0] = programmatic("m0", 1, f"m{count - 2}")  # m0 waits for an even one
    started = time.perf_counter()
    result = plan(measures)
    assert time.perf_counter() - started < 2
    assert [m.id for m in result.measures] == [f"m{i}" for i in range(count)]  # declared
    assert result.dependents["m0"] == tuple(f"m{i}" for i in range(1, count, 2))
    assert result.dependents[f"m{count - 2}"] == ("m0",)


def test_a_long_cycle_is_reported_once_on_its_first_measure() -> None:
    count = 3000
    measures = [programmatic(f"m{i}", 10 + i, f"m{(i + 1) % count}") for i in range(count)]
    started = time.perf_counter()
    with pytest.raises(GraphError) as caught:
        plan(measures)
    assert time.perf_counter() - started < 2
    (problem,) = caught.value.problems
    ids = " → ".join(f"m{i}" for i in range(count))
    assert (problem.line, problem.message) == (10, f"the measures form a cycle: {ids} → m0")


def test_cycles_beside_a_sound_graph() -> None:
    content = "\n".join([
        "- {id: ok, type: programmatic, logic: x}",
        "- {id: x, type: programmatic, input: [ok, y], logic: x}",
        "- {id: y, type: programmatic, input: [z, ok], logic: x}",
        "- {id: z, type: programmatic, input: x, logic: x}",
        "- {id: w, type: programmatic, input: [w, ok, ok], logic: x}",
    ])
    measures, problems = parse_measures(content, "yaml", 3)
    assert problems == []
    with pytest.raises(GraphError) as caught:
        plan(measures)
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (4, "the measures form a cycle: x → y → z → x"),
        (7, "measure `w` uses itself as input"),
    ]


# -- model replies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "value"),
    [
        ("[" * 3000, "[" * 3000),  # too deep for JSON: the text, not a crash
        ("```json\r\n[1, 2]\r\n```\r\n", [1, 2]),
        ("I rate it [1] of 10.\r\n```json\r\n{\"response\": 9}\r\n```\r\n", 9),
        ("Sure:\n~~~\n{\"response\": \"ok\", \"comment\": \"c\"}\n~~~", "ok"),
    ],
)
def test_odd_model_replies(reply: str, value: object) -> None:
    assert read_reply(reply).value == value
