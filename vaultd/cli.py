"""The command line: parse arguments, build the settings, call one function, map errors.

Exit codes: 0 all is well, 1 a note ended in error (or ``check`` found problems),
2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO, cast

from vaultd import __version__, config
from vaultd.edges.model import credentials_problem, known_models, unknown_model
from vaultd.edges.vault import (
    DEFAULT_TEMPLATES,
    find_vault,
    iter_notes,
    state_folder_problem,
    wants_run,
)
from vaultd.edges.writer import Writer
from vaultd.errors import ConfigError, FormatError, NoteReadError, Problem, VaultdError
from vaultd.evaluate.cost import Usage
from vaultd.note.properties import collisions
from vaultd.note.text import Note, not_vaultds, pending_hint
from vaultd.obsidian import scaffold
from vaultd.obsidian.publish import describe, publish, report_paths
from vaultd.obsidian.status import format_status, vault_status
from vaultd.runs import shards
from vaultd.runs import systemd as service
from vaultd.runs.daemon import run_daemon
from vaultd.runs.engine import Checked, NoteResult, check_note, read_note
from vaultd.runs.progress import ProgressBar
from vaultd.runs.services import open_services

log = logging.getLogger("vaultd")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]
# syslog priorities: journald reads a "<N>" prefix on each stderr line as the level
_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelname, 6)}>{super().format(record)}"


def configure_logging(level: str) -> None:
    """Logs go to stderr: with a level prefix journald understands when run by systemd."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("vaultd")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class Unread:
    """A text stream whose reader may go away (``vaultd check VAULT | head -1``): once
    writing to it fails with a broken pipe, what follows is dropped, and the work goes on.

    Its file descriptor is pointed at ``/dev/null`` then, so the text still buffered is
    flushed somewhere (at exit, too) rather than failing again."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._gone = False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                self._stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self._gone = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding...
        return getattr(self._stream, name)


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
    run.add_argument("--shard", action="store_true", help=argparse.SUPPRESS)
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
            return check_paths(args.paths, out)
        if args.command == "status":
            return status_command(args.vault, out)
        if args.command == "init":
            return init_command(args.vault, out)
        if args.command == "report":
            return report_command(args.vault, args.report_path, out)
        if args.command == "service":
            for line in service.install(args.vault, args.unit_dir, start=not args.no_start):
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


def _say_no_key(problem: str) -> None:
    print(f"vaultd: {problem}: notes that ask the model wait, left as they are; programmatic "
          "ones still run", file=sys.stderr)


def run_command(args: argparse.Namespace, out: TextIO) -> int:
    vault: Path = args.vault.resolve()
    if not _is_folder(vault):
        return EXIT_USAGE
    if args.shard:  # the parent's settings come on stdin: the config is not loaded again
        return run_shard(vault, out)
    settings = config.load(vault, {
        "model": args.model, "answer_model": args.answer_model, "max_tokens": args.max_tokens,
        "concurrency": args.concurrency, "workers": args.workers, "processes": args.processes,
        "settle": args.settle,
        "cache": args.cache,
    })
    if args.batch and not args.once:
        print("vaultd: --batch works with --once", file=sys.stderr)
        return EXIT_USAGE
    if not args.once:  # entry() exits without waiting for requests still in flight
        return run_daemon(vault, settings)
    return run_once(vault, settings, out, batch=args.batch)


def status_command(vault: Path, out: TextIO) -> int:
    if not _is_folder(vault):
        return EXIT_USAGE
    for line in format_status(vault_status(vault)):
        print(line, file=out)
    return EXIT_OK


def init_command(vault: Path, out: TextIO) -> int:
    if not _is_folder(vault):
        return EXIT_USAGE
    for written in scaffold.init_vault(vault):
        name = _relative(written.path, vault)
        print(f"wrote {name}" if written.created else f"kept {name} (it exists)", file=out)
    # The report too: from now on the daemon keeps it up to date (it never creates one).
    settings = config.load(vault)
    report, base = report_paths(vault, settings)
    if report.exists() or base.exists():
        for path in (report, base):
            if path.exists():
                print(f"kept {_relative(path, vault)} (it exists)", file=out)
    else:
        for item in publish(vault, settings, Writer(vault)).files:
            print(f"wrote {_relative(item.path, vault)}", file=out)
    if scaffold.uses_default_templates(vault):
        print(f"vaultd: in Obsidian, set the Templates core plugin's folder to "
              f"{DEFAULT_TEMPLATES} to insert the template", file=out)
    return EXIT_OK


def report_command(vault: Path, report_path: str | None, out: TextIO) -> int:
    vault = vault.resolve()
    if not _is_folder(vault):
        return EXIT_USAGE
    settings = config.load(vault, {"report_path": report_path})
    for line in describe(publish(vault, settings, Writer(vault))):
        print(f"vaultd: {line}", file=out)
    return EXIT_OK


def run_once(vault: Path, settings: config.Settings, out: TextIO, batch: bool = False) -> int:
    """Process every pending note once; one line per note, then the totals.

    With ``batch``, notes whose model requests were deferred to a batch go round again
    once the batch has ended, until every note has finished. Many notes are dealt out to
    several processes (:mod:`vaultd.runs.shards`).
    """
    todo = [path for path in iter_notes(vault) if wants_run(path)]
    processes = shards.processes_for(settings, len(todo), batch)
    usage = Usage()
    results: list[NoteResult] = []
    in_flight = [0]
    bar = ProgressBar(sys.stderr, len(todo), usage, lambda: in_flight[0])

    def report(result: NoteResult) -> None:
        usage.merge(result.usage)
        bar.advance()
        if result.status == "not_pending":
            return
        results.append(result)
        line = f"{result.status.replace('_', ' '):<10} {_relative(result.path, vault)}"
        bar.print_above(f"{line}: {result.summary}" if result.summary else line, out)

    try:
        if processes > 1:
            problem = credentials_problem()
            if problem:
                _say_no_key(problem)

            def reported(note: shards.Reported, flying: int) -> None:
                in_flight[0] = flying
                report(NoteResult(note.path, note.status, note.summary,  # type: ignore[arg-type]
                                  usage=note.usage))

            for line in shards.run(vault, settings, shards.deal(todo, processes), reported):
                print(f"vaultd: {line}", file=sys.stderr)
        else:
            run_here(vault, settings, todo, batch, report, in_flight)
    finally:
        bar.close()
    counts = {s: sum(1 for r in results if r.status == s) for s in
              ("done", "error", "unreadable", "gone", "left_alone", "waiting")}
    parts = [f"{n} {s.replace('_', ' ')}" for s, n in counts.items() if n]
    print(f"vaultd: {len(results)} notes processed" + (f": {', '.join(parts)}" if parts else ""),
          file=out)
    if usage.used:
        print(f"vaultd: model: {usage.summary()}", file=out)
    return EXIT_OK if counts["done"] == len(results) else EXIT_FAILED


def run_here(vault: Path, settings: config.Settings, todo: list[Path], batch: bool,
             report: Callable[[NoteResult], None], in_flight: list[int],
             quiet: bool = False) -> None:
    """Run ``todo`` in this process, calling ``report`` for each note as it ends;
    ``in_flight[0]`` follows the model requests in flight. ``quiet``: no notice of a
    missing key (a parent process gave it)."""
    # A --once run is not watched note by note: a note that finishes within a second is
    # written once, from Pending straight to Done (slower ones still show Processing).
    with open_services(vault, settings, live_interval=1.0, batch=batch,
                       announce_at_start=False, warm_up=bool(todo)) as services:
        if services.credentials_problem and not quiet:
            _say_no_key(services.credentials_problem)
        if services.batches:
            services.batches.resume()
        slots = services.engine.effects.model_slots
        with ThreadPoolExecutor(settings.note_workers, thread_name_prefix="vaultd-note") as pool:
            while todo:
                deferred: list[Path] = []
                for result in pool.map(services.engine.process, todo):
                    if result.status == "deferred":  # its usage counts when it ends
                        deferred.append(result.path)
                        continue
                    in_flight[0] = slots.in_use
                    report(result)
                if not deferred or not services.batches or not services.batches.run_round():
                    break
                todo = deferred


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


def check_paths(paths: list[Path], out: TextIO) -> int:
    """Validate notes without running anything: every problem as ``file:line: message``.

    Only vaultd's notes (:func:`vaultd.note.text.not_vaultds`) are checked in a folder; a note
    named on the command line that is not one says so, and why. The config of the vault
    each path is in is checked too (once), and gives the property prefix; a measure whose
    property a user's property holds, or a model name the installed SDK does not know, is
    a warning, not a problem.
    """
    checked = with_problems = with_warnings = 0
    prefixes: dict[Path | None, str] = {}
    known: frozenset[str] | None = None  # the SDK's model names, read once when needed
    for path in paths:
        explicit = path.is_file()
        vault = find_vault(path) if path.exists() else None
        if vault not in prefixes:
            try:
                settings = config.load(vault)
                prefixes[vault] = settings.property_prefix
                known = known_models() if known is None else known
                for key in ("model", "answer_model"):
                    warning = unknown_model(getattr(settings, key), known)
                    if warning:
                        with_warnings += 1
                        print(f"{vault or 'vaultd'}: warning: setting `{key}`: {warning}",
                              file=out)
            except ConfigError as exc:
                print(str(exc), file=out)
                with_problems += 1
                prefixes[vault] = config.Settings.model_fields["property_prefix"].default
        notes = [path] if explicit else list(iter_notes(path, vault)) if path.is_dir() else None
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
            why = not_vaultds(note, None)
            if why is not None:
                if explicit:  # named on the command line: say why it is left alone
                    checked += 1
                    with_problems += 1
                    print(f"{note_path}: not a vaultd note: {why}; vaultd leaves it as it is",
                          file=out)
                continue  # an ordinary note, not one of vaultd's
            checked += 1
            problems: list[Problem] = []
            good = None
            try:
                good = check_note(note)
            except FormatError as exc:
                problems = list(exc.problems)
            near = pending_hint(note)
            if near:
                problems.append(Problem(near[0], f"not pending: this Status line is {near[1]}",
                                        _PENDING_HOW if note.frontmatter else
                                        _FRONTMATTER_HOW))
            for problem in sorted(problems, key=lambda p: (p.line or 0, p.message)):
                print(problem.format(str(note_path)), file=out)
            with_problems += bool(problems)
            if good is None:
                continue
            warnings = [(c.line, f"{c.message} ({c.hint})")
                        for c in collisions(note, prefixes[vault], good.plan.measures)]
            known = known_models() if known is None else known
            warnings.extend(_model_warnings(note, good, known))
            with_warnings += bool(warnings)
            for line, message in sorted(warnings):
                print(f"{note_path}:{line}: warning: {message}", file=out)
    warned = f", {with_warnings} with warnings" if with_warnings else ""
    print(f"vaultd: {checked} notes checked, {with_problems} with problems{warned}", file=out)
    return EXIT_FAILED if with_problems else EXIT_OK


_PENDING_HOW = "to run it, write `Status: Pending` as a property between the `---` lines"
_FRONTMATTER_HOW = ("to run it, start the note with a frontmatter block: a `---` line as its "
                    "very first line, then `Status: Pending`, then `---`")


def _model_warnings(note: Note, good: Checked, known: frozenset[str]) -> list[tuple[int, str]]:
    """(line, warning) for each model name the note or its measures give that the installed
    SDK does not know (a `model: M1 Pro` in a product note, or a typo)."""
    found: list[tuple[int, str]] = []
    for key, name in (("model", good.overrides.model),
                      ("answer_model", good.overrides.answer_model)):
        prop = note.frontmatter.get(key) if note.frontmatter else None
        warning = unknown_model(name, known) if name else None
        if warning and prop:
            spelled = prop.key.strip("'\"")
            found.append((prop.start + 1, f"property `{spelled}`: {warning}"))
    for measure in good.plan.measures:
        warning = unknown_model(measure.model, known) if measure.model else None
        if warning:
            found.append((measure.line, f"measure `{measure.id}`: model {warning}"))
    return found


def _relative(path: Path, root: Path) -> str:
    full, prefix = str(path), str(root).rstrip(os.sep) + os.sep
    return full[len(prefix):] if full.startswith(prefix) else full


def entry() -> None:
    """The ``vaultd`` command: :func:`main`, then an exit that does not wait for threads.

    Every note's writes are finished and the cache is closed when :func:`main` returns;
    what is left are idle pool threads and, at most, a model request or an import of the SDK
    nobody needs any more. Joining them would only delay the exit.
    """
    # Output nobody reads never stops the work (nor prints a traceback): the exit code
    # still says how the notes ended.
    sys.stdout = cast(TextIO, Unread(sys.stdout))
    sys.stderr = cast(TextIO, Unread(sys.stderr))
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
