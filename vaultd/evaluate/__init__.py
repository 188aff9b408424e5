"""Evaluating one note's measures, without touching a file.

Holds the plan (``graph``: which measure reads which, in what order), running it
(``runner``), what a measure asks a model and gets back (``ask``: the request, the reply,
the :class:`~vaultd.evaluate.ask.Model` protocol the clients in :mod:`vaultd.edges`
implement), reading a model's reply (``reply``) and what a run costs (``cost``).

May import: :mod:`vaultd.note`, :mod:`vaultd.errors`, :mod:`vaultd.config`. Never
:mod:`vaultd.edges` or anything above it, nor anthropic, quickjs, watchdog or sqlite3:
the model and the sandbox come in as arguments (checked by ``lint-imports``).
"""
