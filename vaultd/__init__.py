"""vaultd: a companion daemon for Obsidian vaults.

It reads notes marked ``Status: Pending``, runs the measures they declare over the
assistant's answer, and writes the results back into the note in place.
"""

__version__ = "0.1.0"
