"""The command line: parse arguments, build the settings, call one function, map errors.

Each command is one library call, imported when the command runs (so ``vaultd status``
loads neither the model client, the sandbox nor the watcher); a :class:`VaultdError`
becomes ``vaultd: <what>: <why>`` on stderr and an exit code.

Exit codes: 0 all is well, 1 a note ended in error (or ``check`` found problems),
2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from vaultd import __version__, config
from vaultd.edges.vault import find_vault, state_folder_problem
from vaultd.errors import ConfigError, VaultdError
from vaultd.runs.process import LEVELS, configure_logging, run_process

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 on bad usage, as we do
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaultd", description="Evaluate AI answers kept in Obsidian notes.")
    parser.add_argument("--version", action="version", version=f"vaultd {__version__}")
    parser.add_argument("--log-level", default="WARNING",
                        choices=LEVELS,
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
    run.add_argument("--batch", action="store_true",
                     help="with --once: send model requests through the Message Batches API "
                     "(half the price; results arrive in rounds, one per level of the graph)")
    run.add_argument("--processes", type=int,
                     help="with --once: processes to deal the notes out to (default: one per "
                     "core, up to 4, when there are at least 100 pending notes for each)")
    run.add_argument("--dry-run", action="store_true",
                     help="with --once: print the requests each pending note would send and "
                     "their estimated cost (an upper bound), sending and writing nothing")
    run.add_argument("--no-cache", dest="cache", action="store_const", const=False,
                     help="ask the model again even for requests it has answered before")

    run.add_argument("--log-level", default=argparse.SUPPRESS, choices=LEVELS,
                     help="how much to log on stderr (default: WARNING)")
    run.add_argument("--settle", type=float,
                     help="seconds a note must be quiet before it is read (default 0.5)")

    status = commands.add_parser("status", help="count the vault's notes by status",
                                 description="Pending, processing, done and error notes, the "
                                 "last errors, and the running daemon's figures.")
    status.add_argument("vault", type=Path, metavar="VAULT", help="the vault's folder")

    service = commands.add_parser("service", help="run vaultd as a systemd user service",
                                  description="Install the systemd user unit for a vault.")
    actions = service.add_subparsers(dest="action", required=True, parser_class=_Parser)
    install = actions.add_parser("install", help="write and enable the unit for VAULT",
                                 description="Write vaultd@.service for the current user and "
                                 "enable (and start) the instance for VAULT.")
    install.add_argument("vault", type=Path, metavar="VAULT", help="the vault's folder")
    install.add_argument("--unit-dir", type=Path,
                         help="where to write the unit (default ~/.config/systemd/user)")
    install.add_argument("--no-start", action="store_true",
                         help="only write the unit; do not enable or start it")

    report = commands.add_parser("report", help="write the report note and the Bases file",
                                 description="Write the report note (default `vaultd "
                                 "report.md`) and vaultd.base beside it, from the results in "
                                 "the vault's finished notes. Only vaultd's own files are "
                                 "written, and only when their content changed.")
    report.add_argument("vault", type=Path, metavar="VAULT", help="the vault's folder")
    report.add_argument("--report-path",
                        help="the report note, relative to the vault (default: the "
                        "report_path setting, `vaultd report.md`)")

    check = commands.add_parser("check", help="validate notes without running anything",
                                description="Validate notes, and the config of the vault they "
                                "are in; problems print as file:line: message (hint).")
    check.add_argument("paths", type=Path, nargs="+", metavar="PATH",
                       help="notes, or folders to search for notes")

    init = commands.add_parser("init", help="write a vault's config.toml and template note",
                               description="Write VAULT/.vaultd/config.toml (every setting, "
                               "commented out at its default) and a template note in the "
                               "vault's templates folder. Existing files are never "
                               "overwritten.")
    init.add_argument("vault", type=Path, metavar="VAULT", help="the vault's folder")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    problem = _state_folder_problem(args)
    if problem:
        print(f"vaultd: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "check":
            from vaultd.runs.check import check_paths
            return check_paths(args.paths, out)
        if args.command == "status":
            return status_command(args.vault, out)
        if args.command == "init":
            return init_command(args.vault, out)
        if args.command == "report":
            return report_command(args.vault, args.report_path, out)
        if args.command == "service":
            from vaultd.runs.systemd import install
            for line in install(args.vault, args.unit_dir, start=not args.no_start):
                print(line, file=out)
            return EXIT_OK
        return run_command(args, out)
    except ConfigError as exc:
        print(f"vaultd: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except VaultdError as exc:
        print(f"vaultd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _state_folder_problem(args: argparse.Namespace) -> str | None:
    """A ``.vaultd`` that is not a folder, in the vault a command works on (for ``check``,
    in the folders from each path up to its vault): every command stops on it."""
    if args.command != "check":
        return state_folder_problem(args.vault)
    for path in args.paths:
        vault = find_vault(path) if path.exists() else None
        chain = [path.resolve(), *path.resolve().parents]
        for folder in chain[:chain.index(vault) + 1 if vault in chain else 2]:
            problem = state_folder_problem(folder)
            if problem:
                return problem
    return None


def _is_folder(vault: Path) -> bool:
    """Whether ``vault`` is a folder; if not, says so on stderr."""
    if vault.is_dir():
        return True
    print(f"vaultd: {vault}: not a folder", file=sys.stderr)
    return False


def run_command(args: argparse.Namespace, out: TextIO) -> int:
    vault: Path = args.vault.resolve()
    if not _is_folder(vault):
        return EXIT_USAGE
    settings = config.load(vault, {
        "model": args.model, "answer_model": args.answer_model, "max_tokens": args.max_tokens,
        "concurrency": args.concurrency, "workers": args.workers, "processes": args.processes,
        "settle": args.settle,
        "cache": args.cache,
    })
    if args.batch and not args.once:
        print("vaultd: --batch works with --once", file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run and not args.once:
        print("vaultd: --dry-run works with --once", file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run:
        from vaultd.runs.dryrun import dry_run
        return dry_run(vault, settings, out, batch=args.batch)
    if not args.once:  # entry() exits without waiting for requests still in flight
        from vaultd.runs.daemon import run_daemon
        return run_daemon(vault, settings)
    from vaultd.runs.once import run_once
    return run_once(vault, settings, out, batch=args.batch)


def status_command(vault: Path, out: TextIO) -> int:
    if not _is_folder(vault):
        return EXIT_USAGE
    from vaultd.edges.clock import wall_clock
    from vaultd.obsidian.status import format_status, vault_status
    for line in format_status(vault_status(vault, now=wall_clock()())):
        print(line, file=out)
    return EXIT_OK


def init_command(vault: Path, out: TextIO) -> int:
    if not _is_folder(vault):
        return EXIT_USAGE
    from vaultd.obsidian.scaffold import initialise
    for line in initialise(vault):
        print(line, file=out)
    return EXIT_OK


def report_command(vault: Path, report_path: str | None, out: TextIO) -> int:
    vault = vault.resolve()
    if not _is_folder(vault):
        return EXIT_USAGE
    from vaultd.edges.writer import Writer
    from vaultd.obsidian.publish import describe, publish
    settings = config.load(vault, {"report_path": report_path})
    for line in describe(publish(vault, settings, Writer(vault))):
        print(f"vaultd: {line}", file=out)
    return EXIT_OK


def entry() -> None:
    """The ``vaultd`` command: :func:`main`, then an exit that does not wait for threads
    (:func:`vaultd.runs.process.run_process`)."""
    run_process(main)


if __name__ == "__main__":  # pragma: no cover
    entry()
