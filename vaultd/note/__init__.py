"""The note format, pure: text in, values out, and values back to text.

Holds parsing a note (``text``), the YAML subset (``yamlread``), the measures block
(``measures``), a note's own settings (``overrides``), the outcome of a measure
(``outcomes``), rendering outcomes (``render``), splicing them into the text (``splice``),
the properties vaultd keeps in the frontmatter (``properties``) and reading results back
(``results``).

May import: :mod:`vaultd.errors`, :mod:`vaultd.config` and the standard library. Never
files, clocks, processes, the network, the model or the sandbox: every function here is a
function of its arguments (checked by ``lint-imports``, see ``pyproject.toml``).
"""
