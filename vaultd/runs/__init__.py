"""Running vaultd: one note's journey, a whole vault once, and the daemon.

Holds one note's journey from its file to its written result (``engine``), the services
a run opens (``services``: model, cache, sandbox, writer), the ``--once`` run (``once``)
and its shards (``shards``, each child started at ``shard_child``), the daemon
(``daemon``), its file watcher (``watcher``), queue (``scheduler``), debounce
(``refresh``), the progress bar (``progress``) and systemd (``systemd``).

May import everything below it: :mod:`vaultd.obsidian`, :mod:`vaultd.edges`,
:mod:`vaultd.evaluate`, :mod:`vaultd.note`. Never the CLI (checked by ``lint-imports``).
"""
