"""Vaults for the benchmark, generated from the seed note (``tests/data/seed-note.md``).

* :func:`seed_like_note` — the seed's query, its four measures and (half the time) its old
  results, with a varied answer: treatment sections shuffled and some dropped, brand names
  swapped, a varied tail, and a line that makes every answer unique (so vaultd's response
  cache cannot answer one note from another in the same run).
* :func:`programmatic_note` — a pending note whose five measures are all JavaScript.
* :func:`done_note` / :func:`plain_note` — the cheap bulk of a large vault.

Everything is seeded: the same arguments give the same vault.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED_PATH = ROOT / "tests" / "data" / "seed-note.md"

# Brands the fake model looks for, in the order it finds them in the text.
BRANDS = [
    "Poteligeo", "Adcetris", "Targretin", "Intron A", "Trexall", "Folotyn", "Gemzar",
    "Doxil", "Istodax", "Zolinza", "Keytruda", "Lumoxiti", "Valchlor", "Uvadex",
]
BRAND_PROMPT = "BRAND NAMES"  # the seed's two ai measures, as their prompts say
STRENGTH_PROMPT = "how strongly is 'Poteligeo' recommended"


def judgment(text: str) -> str | None:
    """What the bench's fake model answers to one of the seed's two ai prompts (``text``,
    the request's whole text): the brands the context names, in order, or a strength of 7;
    None when ``text`` is neither."""
    if BRAND_PROMPT in text:
        context = text.split("</context>", 1)[0]
        found = sorted((context.find(brand), brand) for brand in BRANDS if brand in context)
        return json.dumps([brand for _, brand in found])
    if STRENGTH_PROMPT in text:
        return json.dumps({"response": 7,
                           "comment": "Named among the preferred second-line options."})
    return None


# generic names in the seed's answer that get a brand in parentheses in some notes
_GENERICS = {
    "Brentuximab Vedotin": "Adcetris",
    "Bexarotene": "Targretin",
    "Interferon-alpha": "Intron A",
    "Methotrexate": "Trexall",
    "pralatrexate": "Folotyn",
    "Gemcitabine": "Gemzar",
    "liposomal doxorubicin": "Doxil",
}
_EXTRA_LINES = [
    "- **Romidepsin ({brand}):** an HDAC inhibitor, sometimes used after other options.",
    "- **Vorinostat ({brand}):** an oral HDAC inhibitor with modest response rates.",
    "- **Pembrolizumab ({brand}):** checkpoint inhibition, mostly within trials.",
]

_FENCE_ANSWER = "> ```answer-text"
_FENCE_END = "> ```"


def _split_seed(seed: str) -> tuple[str, list[str], str]:
    """The seed around its answer: text before the answer lines, the lines, text after."""
    lines = seed.split("\n")
    start = lines.index(_FENCE_ANSWER) + 1
    end = lines.index(_FENCE_END, start)
    return "\n".join(lines[:start]) + "\n", lines[start:end], "\n" + "\n".join(lines[end:])


def _sections(answer: list[str]) -> tuple[list[str], list[list[str]], list[str]]:
    """The answer's intro, its ``#### N.`` treatment sections, and the rest."""
    heads = [i for i, line in enumerate(answer) if line.startswith("> #### ")]
    rest_at = next(i for i, line in enumerate(answer) if i > heads[-1] and line == "> ---")
    sections = [answer[a:b] for a, b in zip(heads, [*heads[1:], rest_at], strict=True)]
    return answer[:heads[0]], sections, answer[rest_at:]


class SeedVariants:
    """Makes seed-like notes; one instance per vault (it holds the random generator)."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        text = SEED_PATH.read_text(encoding="utf-8")
        self.head, answer, self.tail = _split_seed(text)
        self.intro, self.sections, self.rest = _sections(answer)
        # the tail without the old results: notes without any get them appended at the end
        cut = self.tail.index("\n***\n\n> [!evaluation]")
        self.tail_no_results = self.tail[:cut] + "\n"

    def answer_lines(self, number: int) -> list[str]:
        rng = self.rng
        sections = [list(s) for s in self.sections]
        rng.shuffle(sections)
        sections = sections[: rng.randint(3, len(sections))]
        lines = [*self.intro, *(line for s in sections for line in s), *self.rest]
        # the first brand named: Poteligeo most of the time, another brand otherwise
        lead = "Poteligeo" if rng.random() < 0.7 else rng.choice(BRANDS[1:])
        out: list[str] = []
        for line in lines:
            line = line.replace("Poteligeo", lead)
            for generic, brand in _GENERICS.items():
                if generic in line and rng.random() < 0.5:
                    line = line.replace(generic, f"{generic} ({brand})", 1)
            if line.startswith("> - **Mogamulizumab, and,"):  # the seed's runaway line
                line = "> - **Mogamulizumab, and" + "," * rng.choice([0, 10, 200, 2000, 8000])
            out.append(line)
        for _ in range(rng.randint(0, 3)):
            extra = rng.choice(_EXTRA_LINES).format(brand=rng.choice(BRANDS))
            out.insert(rng.randint(1, len(out) - 1), "> " + extra)
        out.append("> ")
        out.append(f"> (Reference {number:05d}: generated for the vaultd benchmark.)")
        return out

    def note(self, number: int) -> str:
        """One pending seed-like note (half of them carry the seed's old results)."""
        tail = self.tail if self.rng.random() < 0.5 else self.tail_no_results
        return self.head + "\n".join(self.answer_lines(number)) + tail


PROGRAMMATIC_MEASURES = r"""> [!measures]-
> ```measures-md
> * ---
>   * id: brands
>   * description: "Brand names in parentheses, in order"
>   * type: programmatic
>   * logic: "return [...input.matchAll(/\\(([A-Z][a-z]+)\\)/g)].map(m => m[1]);"
> * ---
>   * params.target: "Poteligeo"
>   * id: target_named
>   * description: "Is Poteligeo named?"
>   * type: programmatic
>   * input: brands
>   * logic: "return input.includes(params.target);"
> * ---
>   * params.target: "Poteligeo"
>   * id: target_position
>   * description: "At what position is Poteligeo named?"
>   * type: programmatic
>   * input: brands
>   * logic: "const i = input.indexOf(params.target); return i === -1 ? 'N/A' : i + 1;"
> * ---
>   * id: words
>   * description: "How long is the answer (words)?"
>   * type: programmatic
>   * logic: "return input.split(/\\s+/).filter(Boolean).length;"
> * ---
>   * id: summary
>   * description: "Brands and answer length together"
>   * type: programmatic
>   * input: [brands, words]
>   * logic: "return {brands: input[0].length, words: input[1]};"
> ```
"""


def programmatic_note(number: int, status: str = "Pending") -> str:
    """A note whose measures are all programmatic (no model request)."""
    brands = random.Random(number).sample(BRANDS, 3)
    answer = (f"Mogamulizumab ({brands[0]}) is often preferred for blood involvement. "
              f"Brentuximab vedotin ({brands[1]}) suits CD30-positive disease, and "
              f"bexarotene ({brands[2]}) can be combined with photopheresis. Note {number}.")
    return (
        f"---\nStatus: {status}\ntopic: CTCL\n---\n\n# Programmatic note {number}\n\n***\n\n"
        "> [!query]\n> ```query-text\n> What are the second-line options for Sézary syndrome?\n"
        f"> ```\n\n***\n\n> [!answer]\n> ```answer-text\n> {answer}\n> ```\n\n***\n\n"
        + PROGRAMMATIC_MEASURES
    )


def done_note(number: int) -> str:
    """A small note vaultd has finished with: it must never be touched again."""
    return (f"---\nStatus: Done\nEvaluated: 2025-01-01T00:00:00\ntags: [bench]\n---\n\n"
            f"# Note {number}\n\nSome text about [[note {number - 1}]] and nothing else.\n")


def plain_note(number: int) -> str:
    """An ordinary note with no frontmatter."""
    return f"# Journal {number}\n\nNothing for vaultd here. #daily\n"


def write_seed_vault(vault: Path, count: int, seed: int = 1) -> list[Path]:
    """``count`` pending seed-like notes in a few folders; their paths."""
    variants = SeedVariants(seed)
    paths = []
    for number in range(count):
        folder = vault / f"topic-{number % 10:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"seed-{number:05d}.md"
        path.write_text(variants.note(number), encoding="utf-8")
        paths.append(path)
    return paths


def write_large_vault(vault: Path, count: int, pending_share: float = 0.01,
                      plain_share: float = 0.09) -> list[Path]:
    """``count`` notes in folders of 200: mostly Done, some plain, ``pending_share``
    pending programmatic-only notes (spread evenly). Returns the pending notes' paths."""
    pending_every = max(1, round(1 / pending_share)) if pending_share > 0 else 0
    plain_every = max(1, round(1 / plain_share)) if plain_share > 0 else 0
    pending = []
    for number in range(count):
        folder = vault / f"area-{number // 200:03d}"
        if number % 200 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"note-{number:05d}.md"
        if pending_every and number % pending_every == pending_every // 2:
            text = programmatic_note(number)
            pending.append(path)
        elif plain_every and number % plain_every == 1:
            text = plain_note(number)
        else:
            text = done_note(number)
        path.write_text(text, encoding="utf-8")
    return pending


_STATUS = re.compile(r"\A\ufeff?---\r?\n(?:.*\r?\n)*?Status:[ \t]*(\w+)", re.IGNORECASE)


def note_status(path: Path) -> str | None:
    """The note's Status property as it is on disk (None if unreadable or absent)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(2048).decode("utf-8", errors="replace")
    except OSError:
        return None
    match = _STATUS.match(head)
    return match.group(1) if match else None


def set_pending(path: Path) -> None:
    """Flip a Done note back to Pending, in place (the file keeps its identity)."""
    with path.open("r+b") as handle:
        data = handle.read().replace(b"Status: Done", b"Status: Pending", 1)
        handle.seek(0)
        handle.write(data)
        handle.truncate()


# -- panels ------------------------------------------------------------------------------

SEED_QUESTION = ("My Sezary Syndrome is resistant to first-line treatments. What are the best "
                 "second-line treatment options?")


def panel_questions(count: int) -> list[str]:
    """``count`` distinct questions in the seed's words (a panel note each)."""
    return [f"{SEED_QUESTION} (case {number + 1} of {count})" for number in range(count)]


def panel_note(question: str, samples: int, assistants: list[str] | None = None) -> str:
    """A pending panel note: the seed's query (with ``question``) and its four measures, no
    answer; ``assistants`` None: the vault's answer model."""
    seed = SEED_PATH.read_text(encoding="utf-8")
    query = seed[seed.index("> [!query]"):seed.index("> [!answer]")]
    measures = seed[seed.index("> [!measures]"):seed.index("> [!evaluation]")]
    assert SEED_QUESTION in query
    who = f"assistants: [{', '.join(assistants)}]\n" if assistants else ""
    return (f"---\nStatus: Pending\nsamples: {samples}\n{who}---\n\n***\n\n"
            f"{query.replace(SEED_QUESTION, question)}{measures}")


def write_panel_vault(vault: Path, questions: list[str], samples: int,
                      assistants: list[str] | None = None) -> list[Path]:
    """A panel note per question in ``vault/Panels/``; their paths."""
    folder = vault / "Panels"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, question in enumerate(questions):
        path = folder / f"panel-{number:03d}.md"
        path.write_text(panel_note(question, samples, assistants), encoding="utf-8")
        paths.append(path)
    return paths


def answer_notes(panel: Path) -> list[Path]:
    """The answer notes in a panel note's folder."""
    folder = panel.with_suffix("")
    return sorted(folder.glob("*.md")) if folder.is_dir() else []
