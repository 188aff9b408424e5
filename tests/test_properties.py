"""Properties of the pure core, checked on generated notes.

(a) Writing results into a note changes only what vaultd owns, and writing them twice
    changes nothing more than writing them once.
(b) Any value written into a result reads back as exactly that value, and forges nothing.
(c) The fenced code blocks vaultd finds in a callout are the ones CommonMark finds
    (mistune 3 is the reference parser).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import mistune
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from vaultd.errors import one_line
from vaultd.evaluate.prepare import check_note
from vaultd.note.outcomes import Failure, Outcome, Skipped, Success
from vaultd.note.render import error_callout, evaluation_block, evaluation_pair, render_outcome
from vaultd.note.splice import Changes, apply
from vaultd.note.text import parse, unquote

FAST = settings(max_examples=150, deadline=None)
LINE_BREAKS = re.compile(r"\r\n|\r|\n")
MARKDOWN = mistune.create_markdown(renderer=None)

# -- text ------------------------------------------------------------------------------

# Anything that is not a line break, Unicode included (U+2028 and NEL are not line breaks
# in Markdown, and vaultd must not treat them as such).
CHAR = st.characters(
    codec="utf-8", categories=["L", "M", "N", "P", "S", "Zs"],
    include_characters="\t\x0c\x85\u2028\u200b\ufeff",
)
TRAILING = st.sampled_from(["", " ", "  ", "\t", " \t "])


@st.composite
def prose_line(draw: st.DrawFn) -> str:
    """A line of prose: it starts with a letter, so it is never structure."""
    first = draw(st.characters(categories=["L"]))
    return first + draw(st.text(CHAR, max_size=30)) + draw(TRAILING)


def words(max_size: int = 12) -> st.SearchStrategy[str]:
    return st.text(st.characters(categories=["L", "Nd"], max_codepoint=0x24F), min_size=1,
                   max_size=max_size)


# -- notes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    text: str
    tag: str = "user"  # "user", "sep" (a blank between blocks), "status", "close", "run<N>"


@dataclass(frozen=True)
class Generated:
    text: str
    expected: str
    results: list[str]
    ids: list[str]
    labels: list[str]
    pairs: int


@st.composite
def user_property(draw: st.DrawFn) -> list[str]:
    key = draw(st.from_regex(r"[A-Za-z][A-Za-z0-9_ -]{0,10}", fullmatch=True).filter(
        lambda k: k.strip().lower() not in ("status", "evaluated")))
    value = draw(st.from_regex(r"[A-Za-z0-9 ,.]{0,20}", fullmatch=True).filter(
        lambda v: not v.lstrip().startswith(",")))  # `A: ,` is not YAML: the user's own error
    comment = draw(st.sampled_from(["", " # a comment", "  #x"]))
    shape = draw(st.sampled_from(["plain", "quoted-key", "list", "flat-list", "block",
                                  "comment", "blank"]))
    if shape == "plain":
        return [f"{key}: {value}{comment}".rstrip(" ") + draw(TRAILING)]
    if shape == "quoted-key":
        return [f'"{key}": {value}']
    if shape == "list":
        return [f"{key}:", *(f"  - {v}" for v in draw(st.lists(words(), min_size=1,
                                                                  max_size=3)))]
    if shape == "flat-list":  # as Obsidian writes a list property
        return [f"{key}:", *(f"- {v}" for v in draw(st.lists(words(), min_size=1,
                                                                max_size=3)))]
    if shape == "block":
        return [f"{key}: |", *(f"  {v}" for v in draw(st.lists(words(), min_size=1,
                                                                  max_size=2)))]
    if shape == "comment":
        return [f"# {value}"]
    return [""]


@st.composite
def status_line(draw: st.DrawFn) -> tuple[str, str]:
    """A ``Status: Pending`` line as a user may spell it, and the line vaultd makes of it."""
    key = draw(st.sampled_from(["Status", "status", "STATUS", "sTaTuS", "'Status'",
                                '"status"']))
    sep = draw(st.sampled_from([": ", ":  ", ":\t"]))
    value = draw(st.sampled_from(["Pending", "pending", "PENDING", "'Pending'", '"Pending"']))
    comment = draw(st.sampled_from(["", " # set me", "  # é #x"]))
    trailing = draw(TRAILING)
    return f"{key}{sep}{value}{comment}{trailing}", f"{key}{sep}Done{comment}{trailing}"


@st.composite
def callout_head(draw: st.DrawFn, kind: str) -> str:
    spelled = draw(st.sampled_from([kind, kind.upper(), kind.capitalize()]))
    fold = draw(st.sampled_from(["", "+", "-"]))
    title = draw(st.sampled_from(["", " Title", " A \u2013 title "]))
    return f"[!{spelled}]{fold}{title}"


@st.composite
def user_callout(draw: st.DrawFn, kind: str, info: str | None = None,
                 content: list[str] | None = None) -> list[str]:
    """A callout with one fenced block, in any valid spelling."""
    prefix = draw(st.sampled_from(["> ", " > ", "   > "] if content else
                                  [">", "> ", " > ", "   > "]))
    char = draw(st.sampled_from("`~"))
    size = draw(st.integers(3, 5))
    indent = " " * draw(st.integers(0, 2))
    other = "~" if char == "`" else "`"
    if content is None:
        content = draw(st.lists(st.one_of(
            prose_line(), st.just(""), st.just(other * 4 + "x"), st.just(char * (size - 1)),
            st.just("> [!evaluation]"), st.just("***"),
        ), max_size=3))
    closing = indent + char * draw(st.integers(size, size + 2)) + draw(st.sampled_from(
        ["", " ", "\t"]))
    lines = [draw(callout_head(kind)), f"{indent}{char * size}{info or kind + '-text'}",
             *(indent + line for line in content), closing]
    lines += draw(st.lists(prose_line(), max_size=2))  # text after the block, in the callout
    return [prefix + line for line in lines]


@st.composite
def fenced_block(draw: st.DrawFn) -> list[str]:
    """A top-level code block whose text looks like vaultd's own: it is prose to vaultd."""
    fence = draw(st.sampled_from(["````", "~~~", "~~~~~"]))
    fake = evaluation_pair("fake", "ai", Success("```\nnot a value"))
    return [fence + draw(st.sampled_from(["", "md", " markdown"])), *fake, "",
            *error_callout(["line 1: fake"]), fence]


@st.composite
def outcome(draw: st.DrawFn) -> Outcome:
    scalar = st.one_of(st.none(), st.booleans(), st.integers(), words())
    value = draw(st.one_of(value_text(), scalar, st.lists(scalar, max_size=3),
                           st.dictionaries(words(5), scalar, max_size=2)))
    choices: list[Outcome] = [
        Success(value), Success(value, comment=draw(value_text())),
        Failure(draw(value_text())), Skipped(draw(value_text())),
    ]
    return draw(st.sampled_from(choices))


@st.composite
def value_text(draw: st.DrawFn) -> str:
    """Text that tries hard to look like note structure: fences, callouts, breaks."""
    lines = draw(st.lists(st.one_of(
        st.text(CHAR, max_size=20),
        st.sampled_from(["```", "````", "~~~", "``````x", "   ```", "> ```", "> [!evaluation]",
                         "[!evaluation-result]", "***", "---", "", " ", "\t```"]),
    ), max_size=5))
    breaks = draw(st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=len(lines),
                           max_size=len(lines)))
    return "".join(line + brk for line, brk in zip(lines, breaks, strict=True))[:-1] \
        if lines else ""


@st.composite
def measures(draw: st.DrawFn) -> tuple[list[str], list[str], list[str], str]:
    """Valid measures in the md or yaml form: (content lines, ids, labels, info)."""
    ids = draw(st.lists(st.one_of(
        st.from_regex(r"[A-Za-z0-9_]{1,7}", fullmatch=True),
        st.sampled_from(["on", "No", "yes", "OFF", "true", "y", "1", "0x1f", "1e3", "1_0"]),
    ).filter(lambda i: i not in ("answer", "query")), min_size=1, max_size=4, unique=True))
    form = draw(st.sampled_from(["md", "yaml"]))
    lines: list[str] = []
    labels = []
    for number, name in enumerate(ids):
        fields: list[tuple[str, str]] = [("id", name)]
        description = draw(st.one_of(st.none(), st.text(st.characters(
            categories=["L", "Nd", "Zs"], include_characters='"\\#:\'-'), min_size=1,
            max_size=20).filter(lambda d: d.strip() == d and d.strip())))
        plain = draw(st.sampled_from([None] * 6 + ["Yes", "2024-01-01", "12:30", "0x10",
                                                   "1.50"]))
        if plain is not None:  # YAML 1.1 reads these as no text, but a label is text
            description = plain
            fields.append(("description", plain))
        elif description is not None:
            fields.append(("description", json.dumps(description, ensure_ascii=False)))
        labels.append(description or name)
        if draw(st.booleans()):
            fields += [("type", "ai"), ("prompt", "'Say it, ''plainly''.'")]
        else:
            fields += [("type", "programmatic"), ("logic", '"return input;"')]
        if number and draw(st.booleans()):
            fields.append(("input", f"[answer, {ids[number - 1]}]"))
        fields = draw(st.permutations(fields))
        if form == "md":
            lines += ["* ---", *(f"  * {key}: {value}" for key, value in fields)]
        else:
            lines += [f"{'- ' if i == 0 else '  '}{key}: {value}"
                      for i, (key, value) in enumerate(fields)]
    info = draw(st.sampled_from([f"measures-{form}", f"Measures-{form.upper()}"]))
    return lines, ids, labels, info


@st.composite
def generated_note(draw: st.DrawFn) -> Generated:
    lines: list[Line] = [Line("---")]
    props = draw(st.lists(user_property(), max_size=4))
    status, status_done = draw(status_line())
    at = draw(st.integers(0, len(props)))
    for block in props[:at]:
        lines += [Line(text) for text in block]
    lines.append(Line(status, "status"))
    for block in props[at:]:
        lines += [Line(text) for text in block]
    lines.append(Line("---", "close"))

    content, ids, labels, info = draw(measures())
    blocks: list[tuple[str, list[str]]] = [
        ("user", draw(user_callout("answer", content=[draw(prose_line())]))),
        ("user", draw(user_callout("measures", info=info, content=content))),
    ]
    if draw(st.booleans()):
        blocks.insert(0, ("user", draw(user_callout("query", content=[draw(prose_line())]))))
    for _ in range(draw(st.integers(0, 7))):
        kind = draw(st.sampled_from(["prose", "callout", "fence", "space", "error",
                                     "run", "run", "run"]))
        if kind == "prose":
            block = draw(st.lists(prose_line(), min_size=1, max_size=3))
        elif kind == "callout":
            block = draw(user_callout(draw(st.sampled_from(["note", "tip", "Info"]))))
        elif kind == "fence":
            block = draw(fenced_block())
        elif kind == "space":  # no blank line, to CommonMark or vaultd
            block = [draw(st.sampled_from(["\u00a0", "\u3000", "\x0c", " \u00a0 "]))]
        elif kind == "error":  # vaultd's own, but these changes leave it as it is
            block = error_callout([f"line {draw(st.integers(1, 99))}: {draw(words())}"])
        else:
            pairs = draw(st.lists(st.tuples(words(), st.sampled_from(["ai", "programmatic"]),
                                            outcome()), min_size=1, max_size=3))
            block = evaluation_block([evaluation_pair(*pair) for pair in pairs])
        position = draw(st.integers(0, len(blocks)))
        blocks.insert(position, ("run" if kind == "run" else "user", block))

    runs = 0
    for number, (kind, block) in enumerate(blocks):
        previous = blocks[number - 1][0] if number else None
        if kind == "run" and previous == "run":  # two runs with only blanks between are one
            kind = "user-run-neighbour"
            block = ["Between two runs."]
        gaps = draw(st.integers(0 if number == 0 else 1, 2))
        lines += [Line(draw(st.sampled_from(["", " ", "\t", "  "])), "sep")
                  for _ in range(gaps)]
        tag = f"run{runs}" if kind == "run" else "user"
        runs += kind == "run"
        lines += [Line(text, tag) for text in block]

    style = draw(st.sampled_from(["\n", "\r\n", "\r", "mixed"]))
    # A lone CR next to an LF would read as one CRLF: mixed notes mix LF and CRLF only.
    endings = [draw(st.sampled_from(["\n", "\r\n"])) if style == "mixed" else style
               for _ in lines]
    if draw(st.booleans()):
        endings[-1] = ""  # no final newline
    text = "".join(line.text + end for line, end in zip(lines, endings, strict=True))

    results_pairs = [evaluation_pair(label, "ai", draw(outcome())) for label in labels] \
        if draw(st.integers(0, 9)) else []
    results = evaluation_block(results_pairs)
    expected = _expected(lines, endings, status_done, results)
    return Generated(text, expected, results, ids, labels, len(results_pairs))


def _expected(lines: list[Line], endings: list[str], status: str, block: list[str]) -> str:
    """What the note must read after the changes, built from how it was put together."""
    counts = Counter(endings)
    newline = max(("\n", "\r\n", "\r"), key=counts.__getitem__)
    open_end = endings[-1] == ""
    out = [[line.text, end, line.tag] for line, end in zip(lines, endings, strict=True)]
    for item in out:
        if item[2] == "status":
            item[0] = status
    closing = next(i for i, item in enumerate(out) if item[2] == "close")
    out.insert(closing, ["Evaluated: x", newline, "new"])

    runs = sorted({item[2] for item in out if item[2].startswith("run")},
                  key=lambda tag: int(tag[3:]))
    for number, tag in reversed(list(enumerate(runs))):
        first = next(i for i, item in enumerate(out) if item[2] == tag)
        last = max(i for i, item in enumerate(out) if item[2] == tag)
        if number == 0 and block:
            out[first : last + 1] = [[text, newline, "new"] for text in block]
            continue
        while out[first - 1][2] == "sep":
            first -= 1
        del out[first : last + 1]
    if block and not runs:
        out[-1][1] = out[-1][1] or newline
        out += [["", newline, "new"], *([text, newline, "new"] for text in block)]
    if open_end:
        out[-1][1] = ""
    return "".join(text + end for text, end, _ in out)


# -- (a) only what vaultd owns changes, and twice is once --------------------------------


@FAST
@given(generated_note())
def test_results_change_only_what_vaultd_owns(note: Generated) -> None:
    parsed = parse(note.text)
    assert parsed.is_pending
    checked = check_note(parsed)
    assert [m.id for m in checked.plan.measures] == note.ids
    assert [m.label for m in checked.plan.measures] == note.labels

    changes = Changes(status="Done", properties={"Evaluated": "x"}, results=note.results)
    once = apply(parsed, changes)
    assert once == note.expected

    after = parse(once)
    assert apply(after, changes) == once
    assert after.status == "Done" and after.properties["evaluated"] == "x"
    assert [c.kind for c in after.callouts if c.kind.startswith("evaluation")] == [
        "evaluation", "evaluation-result"] * note.pairs
    assert [m.id for m in check_note(after).plan.measures] == note.ids


@FAST
@given(generated_note(), st.lists(st.text(CHAR, max_size=30), max_size=3), st.booleans())
def test_error_changes_twice_are_once(note: Generated, messages: list[str],
                                      clear: bool) -> None:
    if clear:
        changes = Changes(status="Done", properties={"Error": None}, clear_error=True,
                          results=note.results)
    else:
        changes = Changes(status="Error", properties={"Error": '"x"'},
                          error=error_callout(messages or ["line 1: x"]))
    once = apply(parse(note.text), changes)
    after = parse(once)
    assert apply(after, changes) == once
    errors = [c for c in after.callouts if c.kind == "error"]
    if clear:
        assert errors == [] and "error" not in after.properties
    else:
        assert len(errors) == 1
        assert errors[0].blocks[0].content == "\n".join(messages or ["line 1: x"])
        assert after.properties["error"] == "x" and after.status == "Error"


# -- (b) a value reads back as itself ----------------------------------------------------


def normalized(text: str) -> str:
    return LINE_BREAKS.sub("\n", text)


@FAST
@given(
    st.lists(st.tuples(st.text(CHAR, max_size=20), st.sampled_from(["ai", "programmatic"]),
                       outcome()), min_size=1, max_size=4),
    st.lists(prose_line(), max_size=3),
    st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_values_read_back_as_written(pairs: list[tuple[str, str, Outcome]], prose: list[str],
                                     newline: str) -> None:
    text = newline.join(["---", "Status: Pending", "---", *prose])
    block = evaluation_block([evaluation_pair(*pair) for pair in pairs])
    written = apply(parse(text), Changes(results=block))
    note = parse(written)

    assert [c.kind for c in note.callouts] == ["evaluation", "evaluation-result"] * len(pairs)
    for (label, kind, result), head, body in zip(
        pairs, note.callouts[::2], note.callouts[1::2], strict=True
    ):
        (meta,) = head.blocks
        assert meta.info == "evaluation-yaml" and meta.closed
        assert yaml.safe_load(meta.content) == [{"measure": one_line(label), "type": kind}]
        (value,) = body.blocks  # a comment opens no block
        assert value.info == "evaluation-result-text" and value.closed
        assert value.content == normalized(render_outcome(result))
        comment = result.comment if isinstance(result, Success) else None
        after = [unquote(line) for line in note.lines[value.first_line:body.end]]
        after = after[len(value.content.split("\n")) + 1 :]  # past the closing fence
        assert after == ([_escaped(line) for line in LINE_BREAKS.split(comment)]
                         if comment else [])

    # and CommonMark reads the same value out of the same block (but mistune turns a tab
    # that starts a line in a block quote into spaces, where CommonMark keeps it: values
    # with such a tab are left out of this comparison)
    codes = [code for node in MARKDOWN(normalized(written))
             if isinstance(node, dict) and node["type"] == "block_quote"
             for code in fenced_codes(node)]
    assert [info for info, _ in codes] == [
        "evaluation-yaml", "evaluation-result-text"] * len(pairs)
    found = [raw for info, raw in codes if info == "evaluation-result-text"]
    assert [raw for raw, (_, _, result) in zip(found, pairs, strict=True)
            if not _tab_starts_a_line(render_outcome(result))] == [
        normalized(render_outcome(result)) + "\n" for _, _, result in pairs
        if not _tab_starts_a_line(render_outcome(result))]


def _escaped(line: str) -> str:
    """A comment line as written after the value: one that would open a fence, escaped."""
    text = line.lstrip()
    return line[: len(line) - len(text)] + "\\" + text if text.startswith(("```", "~~~")) \
        else line


def _tab_starts_a_line(text: str) -> bool:
    return any(line.startswith("\t") for line in LINE_BREAKS.split(text))


# -- (c) vaultd finds the code blocks CommonMark finds -----------------------------------

# Lines inside a callout, after the ``>`` marker. Kept to what vaultd has to agree on:
# fences (any char, length, indentation, info string), code, blank lines, plain prose.
# Left out, because vaultd reads only fences that are the callout's own children: list
# items, nested quotes, HTML blocks and setext underlines, which CommonMark reads as
# containers or other blocks; and tabs in the indentation, which CommonMark expands to
# columns and vaultd does not (nobody indents a fence in a callout with tabs).
INFO = st.text(st.sampled_from("abcdxyz-_ .`~"), max_size=8)


@st.composite
def fence_line(draw: st.DrawFn, always: bool = False) -> str:
    """A line that is a fence, or nearly (indented 4, a backtick in a backtick info string);
    ``always``: one that is a fence."""
    indent = " " * draw(st.integers(0, 3 if always else 4))
    run = draw(st.sampled_from("`~")) * draw(st.integers(3, 6))
    info = draw(st.one_of(INFO, st.sampled_from(["", " ", "  \t", "\u00a0"])))
    return indent + run + (info.replace("`", "") if always else info)


@st.composite
def inside_line(draw: st.DrawFn) -> str:
    return draw(st.one_of(
        fence_line(), fence_line(), st.just(""),
        st.builds(lambda n, t: " " * n + t, st.integers(0, 6), prose_line()),
        st.builds(lambda t: "x" + t, st.text(st.sampled_from("`~ ab"), max_size=6)),
    ))


def fenced_codes(quote: dict[str, Any]) -> list[tuple[str, str]]:
    """The fenced code blocks that are a block quote's own children: (info, raw)."""
    return [(child.get("attrs", {}).get("info") or "", child["raw"])
            for child in quote["children"]
            if child["type"] == "block_code" and child.get("style") == "fenced"]


@FAST
@given(
    st.lists(st.tuples(st.sampled_from([">", "> ", " > ", "   >  "]), inside_line()),
             max_size=10),
)
def test_code_blocks_in_a_callout_match_commonmark(body: list[tuple[str, str]]) -> None:
    text = "".join(f"{prefix}{line}\n" for prefix, line in [("> ", "[!query]"), *body])
    (callout,) = parse(text).callouts
    nodes = MARKDOWN(text)
    assert isinstance(nodes, list)
    (quote,) = nodes
    # vaultd's content has no final newline, so no block and a block of one empty line
    # both read as ""
    assert [(block.info, block.content) for block in callout.blocks] == [
        (info, raw.removesuffix("\n")) for info, raw in fenced_codes(quote)]


@st.composite
def document_block(draw: st.DrawFn) -> list[str]:
    """A top-level block: a code fence (maybe with callouts in it), a callout, or prose."""
    kind = draw(st.sampled_from(["fence", "callout", "prose"]))
    if kind == "prose":
        return draw(st.lists(prose_line(), min_size=1, max_size=2))
    if kind == "callout":
        prefix = draw(st.sampled_from([">", "> ", "  > "]))
        head = draw(callout_head(draw(st.sampled_from(["query", "answer", "evaluation"]))))
        body = draw(st.lists(inside_line(), max_size=6))
        return [prefix + line for line in [head, *body]]
    # What the fence hides. When a line in it closes the fence early, the rest is read as
    # blocks; none of it is a bare line of text right after a quote, which CommonMark would
    # read as a lazy continuation of the quote's paragraph. vaultd ends a callout at the
    # first line without ``>``, on purpose: a splice then never takes the user's next line
    # along with vaultd's callout.
    inside = draw(st.lists(st.one_of(
        fence_line(always=True), st.just(""), st.just("> [!query]"),
        st.just("> ```query-text"),
        st.builds(lambda line: "> " + line, prose_line()),
    ), max_size=5))
    return [draw(fence_line(always=True)), *inside]


@FAST
@given(st.lists(document_block(), min_size=1, max_size=6))
def test_callouts_in_a_document_match_commonmark(blocks: list[list[str]]) -> None:
    text = "\n\n".join("\n".join(block) for block in blocks) + "\n"
    ours = [(c.kind, [(b.info, b.content) for b in c.blocks]) for c in parse(text).callouts]
    theirs = []
    for node in MARKDOWN(text):
        assert isinstance(node, dict)
        first = node.get("children", [{}])[0] if node["type"] == "block_quote" else {}
        head = re.match(r"\[!([^\]\s]+)\]", first.get("children", [{}])[0].get("raw", "")
                        if first.get("type") == "paragraph" else "")
        if head:
            theirs.append((head.group(1).lower(), [
                (info, raw.removesuffix("\n")) for info, raw in fenced_codes(node)]))
    assert ours == theirs
