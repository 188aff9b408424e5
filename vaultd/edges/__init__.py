"""What touches the world: the model API, its caches, the sandbox, the vault's files.

Holds the Anthropic client (``model``), the response cache (``cache``), Message Batches
(``batch``), the QuickJS worker pool (``sandbox``, with its worker ``_sandbox_child``),
the vault's paths and safe opening (``vault``) and the crash-safe note writer
(``writer``).

May import: :mod:`vaultd.evaluate` (the interfaces it implements), :mod:`vaultd.note`,
:mod:`vaultd.errors`, :mod:`vaultd.config`. Never :mod:`vaultd.obsidian`,
:mod:`vaultd.runs` or the CLI (checked by ``lint-imports``).
"""
