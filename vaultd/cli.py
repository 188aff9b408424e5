"""The command line: parse arguments, build the settings, call one function, map errors.

Exit codes: 0 all is well, 1 a note ended in error (or ``check`` found problems),
2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

from vaultd import __version__, config
from vaultd.engine import NoteResult, check_note, read_note
from vaultd.errors import ConfigError, FormatError, NoteReadError, VaultdError
from vaultd.model import NO_KEY
from vaultd.services import open_services
from vaultd.vault import iter_notes

log = logging.getLogger("vaultd")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 on bad usage, as we do
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaultd", description="Evaluate AI answers kept in Obsidian notes.")
    parser.add_argument("--version", action="version", version=f"vaultd {__version__}")
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="how much to log on stderr (default: WARNING)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="process the vault's pending notes",
                              description="Process every pending note in VAULT.")
    run.add_argument("vault", type=Path, metavar="VAULT", help="the vault's folder")
    run.add_argument("--once", action="store_true",
                     help="process the pending notes, print a summary and exit")
    run.add_argument("--model", help="model for ai measures")
    run.add_argument("--answer-model", help="model that writes missing answers")
    run.add_argument("--max-tokens", type=int, help="max_tokens for ai measures")
    run.add_argument("--concurrency", type=int, help="model requests in flight at most")
    run.add_argument("--workers", type=int, help="notes processed at the same time")

    check = commands.add_parser("check", help="validate notes without running anything",
                                description="Validate notes; problems print as file:line.")
    check.add_argument("paths", type=Path, nargs="+", metavar="PATH",
                       help="notes, or folders to search for notes")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "check":
            return check_paths(args.paths, out)
        return run_command(args, out)
    except ConfigError as exc:
        print(f"vaultd: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except VaultdError as exc:
        print(f"vaultd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def run_command(args: argparse.Namespace, out: TextIO) -> int:
    vault: Path = args.vault
    if not vault.is_dir():
        print(f"vaultd: {vault}: not a folder", file=sys.stderr)
        return EXIT_USAGE
    settings = config.load(vault, {
        "model": args.model, "answer_model": args.answer_model, "max_tokens": args.max_tokens,
        "concurrency": args.concurrency, "workers": args.workers,
    })
    if not args.once:
        print("vaultd: watching is not available in this version; use --once", file=sys.stderr)
        return EXIT_USAGE
    return run_once(vault, settings, out)


def run_once(vault: Path, settings: config.Settings, out: TextIO) -> int:
    """Process every pending note once; one line per note, then the totals."""
    with open_services(vault, settings) as services:
        if not services.has_key:
            print(f"vaultd: {NO_KEY}: ai measures will end in errors; "
                  "programmatic ones still run", file=sys.stderr)
        results: list[NoteResult] = []
        with ThreadPoolExecutor(settings.workers, thread_name_prefix="vaultd-note") as pool:
            for result in pool.map(services.engine.process, iter_notes(vault)):
                if result.status == "not_pending":
                    continue
                results.append(result)
                name = _relative(result.path, vault)
                print(f"{result.status:<10} {name}: {result.summary}".rstrip(": "), file=out,
                      flush=True)
    counts = {s: sum(1 for r in results if r.status == s) for s in
              ("done", "error", "unreadable", "gone", "left_alone")}
    parts = [f"{n} {s.replace('_', ' ')}" for s, n in counts.items() if n]
    print(f"vaultd: {len(results)} notes processed" + (f": {', '.join(parts)}" if parts else ""),
          file=out)
    return EXIT_OK if counts["done"] == len(results) else EXIT_FAILED


def check_paths(paths: list[Path], out: TextIO) -> int:
    """Validate notes without running anything: every problem as ``file:line: message``."""
    checked = with_problems = 0
    for path in paths:
        explicit = path.is_file()
        notes = [path] if explicit else list(iter_notes(path)) if path.is_dir() else None
        if notes is None:
            print(f"{path}: no such file or folder", file=out)
            with_problems += 1
            continue
        for note_path in notes:
            try:
                _, note = read_note(note_path, 50_000_000)
            except NoteReadError as exc:
                print(str(exc), file=out)
                with_problems += 1
                continue
            if not explicit and not (note.is_pending or note.first("measures")):
                continue  # an ordinary note, not one of vaultd's
            checked += 1
            try:
                check_note(note)
            except FormatError as exc:
                with_problems += 1
                for problem in exc.problems:
                    print(problem.format(str(note_path)), file=out)
    print(f"vaultd: {checked} notes checked, {with_problems} with problems", file=out)
    return EXIT_FAILED if with_problems else EXIT_OK


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
