"""What vaultd writes for Obsidian beside the notes, and what it reads back for people.

Holds the report note (``report``, pure) and its charts (``charts``), writing the report
and the Bases file (``publish``), ``vaultd init`` (``scaffold``) and ``vaultd status``
(``status``).

May import: :mod:`vaultd.edges` (vault paths, the writer), :mod:`vaultd.note`,
:mod:`vaultd.errors`, :mod:`vaultd.config`. Never :mod:`vaultd.runs` or the CLI, and
``vaultd status`` loads neither watchdog, quickjs nor anthropic (checked by
``lint-imports`` and ``tests/test_layout.py``).
"""
