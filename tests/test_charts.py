"""The Mermaid charts vaultd writes, checked by the real Mermaid parser under Node.

Labels and numbers of any kind must make charts that parse; and the parser must reject a
broken chart, or a passing check would prove nothing.
"""

from __future__ import annotations

import random

from vaultd.obsidian import charts

from .mermaidparse import parse_charts


def test_charts_of_any_labels_and_numbers_parse() -> None:
    rng = random.Random(6)
    alphabet = [*'abc XYZ0123456789"\'`%#;:,.-_[]{}()<>|&*!?=+/\\\t\n→é漢🙂', "%%", "-->"]
    labels = ["", "%%{init: {}}%%", '"', "```", "title", "-->", "a\nb", "x" * 200,
              "ends in a backslash\\", "<S=_YP 5=", "<b>bold</b>", "#quot; &amp;"]
    labels += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
               for _ in range(300)]
    numbers = [0.0, 1.0, -3.5, 1e20, 1e-9, 123456.789, 2 / 3]
    made = [charts.pie(label, [(label, 3), (label + "!", 0), ("b", 2)]) for label in labels]
    made += [charts.bars(label, [label, "b"], [1.0, 2.0], label) for label in labels]
    made += [charts.line("t", ["2024-01", "2024-02"], [a, b], "mean")
             for a, b in zip(numbers, reversed(numbers), strict=True)]
    made += [charts.bars("many", [str(n) for n in range(30)], [float(n) for n in range(30)],
                         "notes")]
    code, results = parse_charts(made)
    assert code == 0, [(c, r) for c, r in zip(made, results, strict=True) if not r["ok"]]


def test_the_parser_rejects_a_broken_chart() -> None:
    good = charts.pie("ok", [("a", 1)])
    broken = [
        'pie\n    "a" 1',  # no colon
        'pie\n    "say "hi"" : 1',  # a raw quote: what charts.label() prevents
        "xychart-beta\n    bar [1e+20]",  # an exponent: what charts.number() prevents
        "xychart-beta\n    x-axis [\"a\"\n    bar [1]",  # an unclosed list
        "pie\n    \"a\" : -1",  # a negative slice
        "notachart\n    x",
    ]
    code, results = parse_charts([good, *broken])
    assert code == 1
    assert results[0] == {"ok": True, "type": "pie"}
    assert [r["ok"] for r in results[1:]] == [False] * len(broken)
