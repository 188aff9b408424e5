"""One child process of a sharded ``--once`` run (:mod:`vaultd.runs.shards`).

Started as ``python -m vaultd.runs.shard_child [--log-level LEVEL] VAULT``: it reads the
settings and its notes as one JSON line on stdin (the config is not loaded again), runs
them (:func:`vaultd.runs.once.run_here`) and writes one JSON line per note on stdout.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import TextIO

from vaultd.errors import VaultdError
from vaultd.runs import shards
from vaultd.runs.once import EXIT_FAILED, EXIT_OK, run_here
from vaultd.runs.process import LEVELS, configure_logging, run_process
from vaultd.runs.session import NoteResult


def run_shard(vault: Path, out: TextIO) -> int:
    """The child side of :mod:`vaultd.runs.shards`: the notes on stdin, a JSON line per note."""
    settings, todo = shards.read_assignment(sys.stdin.buffer)
    in_flight = [0]
    lock = threading.Lock()

    def report(result: NoteResult) -> None:
        with lock:
            print(shards.report_line(result.path, result.status, result.summary,
                                     result.usage, in_flight[0]), file=out, flush=True)

    run_here(vault, settings, todo, False, report, in_flight, quiet=True)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vaultd.runs.shard_child")
    parser.add_argument("--log-level", default="WARNING", choices=LEVELS)
    parser.add_argument("vault", type=Path)
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        return run_shard(args.vault.resolve(), sys.stdout)
    except VaultdError as exc:
        print(f"vaultd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    run_process(main)
