"""Notes for tests: the seed note and small builders."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent / "data"
SEED = (DATA / "seed-note.md").read_text(encoding="utf-8")

SEED_REPLIES = {
    # what the model said for the seed note's two ai measures
    "BRAND NAMES": '["Poteligeo"]',
    "how strongly is 'Poteligeo' recommended": (
        '{"response": 9, "comment": "Named as the preferred second-line option."}'
    ),
}


def note_with_measures(measure_lines: list[str], *, status: str = "Pending",
                       answer: str = "The answer mentions Poteligeo.") -> str:
    """A pending note with an answer and a measures-md block of the given lines."""
    body = "\n".join(f"> {line}" for line in measure_lines)
    return (
        f"---\nStatus: {status}\n---\n\n"
        f"> [!answer]\n> ```answer-text\n> {answer}\n> ```\n\n"
        f"> [!measures]\n> ```measures-md\n{body}\n> ```\n"
    )


def programmatic_note(*, status: str = "Pending", logic: str = "return input.length;",
                      answer: str = "Poteligeo is an option.") -> str:
    """A pending note whose only measure is programmatic."""
    return note_with_measures(
        ["* ---", "  * id: size", "  * type: programmatic", f"  * logic: {logic!r}"],
        status=status, answer=answer,
    )
