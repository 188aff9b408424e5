"""``python -m vaultd`` is the ``vaultd`` command."""

from vaultd.cli import entry

entry()
