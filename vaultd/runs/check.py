"""``vaultd check PATH...``: validate notes, and their vault's config, running nothing."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from vaultd import config
from vaultd.edges.model import known_models, unknown_model
from vaultd.edges.vault import find_vault, iter_notes, read_note
from vaultd.errors import ConfigError, FormatError, NoteReadError, Problem, did_you_mean
from vaultd.evaluate.prepare import Checked, check_note
from vaultd.note.panel import PanelSpec, read_panel
from vaultd.note.properties import collisions
from vaultd.note.text import Note, not_vaultds, pending_hint

EXIT_OK, EXIT_FAILED = 0, 1


def check_paths(paths: list[Path], out: TextIO) -> int:
    """Validate notes without running anything: every problem as ``file:line: message``.

    Only vaultd's notes (:func:`vaultd.note.text.not_vaultds`) are checked in a folder; a note
    named on the command line that is not one says so, and why. The config of the vault
    each path is in is checked too (once), and gives the property prefix; a measure whose
    property a user's property holds, a model name the installed SDK does not know (an
    assistant's too, unless the vault's config names it an assistant), or an ``[!answer]``
    in a panel note (left as it is, not judged), is a warning, not a problem.
    """
    checked = with_problems = with_warnings = 0
    prefixes: dict[Path | None, str] = {}
    configured: dict[Path | None, frozenset[str]] = {}  # each vault's assistants' names
    known: frozenset[str] | None = None  # the SDK's model names, read once when needed
    for path in paths:
        explicit = path.is_file()
        vault = find_vault(path) if path.exists() else None
        if vault not in prefixes:
            try:
                settings = config.load(vault)
                prefixes[vault] = settings.property_prefix
                configured[vault] = frozenset(settings.assistants)
                known = known_models() if known is None else known
                for key in ("model", "answer_model"):
                    name = getattr(settings, key)
                    warning = None if name in configured[vault] else unknown_model(name, known)
                    if warning:
                        with_warnings += 1
                        print(f"{vault or 'vaultd'}: warning: setting `{key}`: {warning}",
                              file=out)
            except ConfigError as exc:
                print(str(exc), file=out)
                with_problems += 1
                prefixes[vault] = config.Settings.model_fields["property_prefix"].default
                configured[vault] = frozenset()
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
            spec, panel_problems = read_panel(note)
            problems.extend(p for p in panel_problems if p not in problems)
            near = pending_hint(note)
            if near:
                problems.append(Problem(near[0], f"not pending: this Status line is {near[1]}",
                                        _PENDING_HOW if note.frontmatter else
                                        _FRONTMATTER_HOW))
            for problem in sorted(problems, key=lambda p: (p.line or 0, p.message)):
                print(problem.format(str(note_path)), file=out)
            with_problems += bool(problems)
            if good is None and spec is None:
                continue
            known = known_models() if known is None else known
            warnings: list[tuple[int, str]] = []
            if good is not None:
                warnings += [(c.line, f"{c.message} ({c.hint})")
                             for c in collisions(note, prefixes[vault], good.plan.measures)]
                warnings.extend(_model_warnings(note, good, known, configured[vault]))
            if spec is not None:  # a panel note's, even where it has problems
                warnings.extend(_panel_warnings(note, spec, known, configured[vault]))
            with_warnings += bool(warnings)
            for line, message in sorted(warnings):
                print(f"{note_path}:{line}: warning: {message}", file=out)
    warned = f", {with_warnings} with warnings" if with_warnings else ""
    print(f"vaultd: {checked} notes checked, {with_problems} with problems{warned}", file=out)
    return EXIT_FAILED if with_problems else EXIT_OK


_PENDING_HOW = "to run it, write `Status: Pending` as a property between the `---` lines"
_FRONTMATTER_HOW = ("to run it, start the note with a frontmatter block: a `---` line as its "
                    "very first line, then `Status: Pending`, then `---`")


def _model_warnings(note: Note, good: Checked, known: frozenset[str],
                    assistants: frozenset[str]) -> list[tuple[int, str]]:
    """(line, warning) for each model name the note or its measures give that the installed
    SDK does not know (a `model: M1 Pro` in a product note, or a typo) and that is not one
    of the vault's ``assistants`` (a judge may be one)."""
    found: list[tuple[int, str]] = []
    answer_note = note.frontmatter is not None and note.frontmatter.get("panel") is not None
    for key, name in (("judge" if answer_note else "model", good.overrides.model),
                      ("answer_model", good.overrides.answer_model)):
        prop = note.frontmatter.get(key) if note.frontmatter else None
        warning = unknown_model(name, known) if name and name not in assistants else None
        if warning and prop:
            spelled = prop.key.strip("'\"")
            found.append((prop.start + 1, f"property `{spelled}`: {warning}"))
    for measure in good.plan.measures:
        warning = unknown_model(measure.model, known) \
            if measure.model and measure.model not in assistants else None
        if warning:
            found.append((measure.line, f"measure `{measure.id}`: model {warning}"))
    return found


def _panel_warnings(note: Note, spec: PanelSpec, known: frozenset[str],
                    assistants: frozenset[str]) -> list[tuple[int, str]]:
    """(line, warning) for a panel note's assistant names that are neither one of the vault's
    ``assistants`` nor a model the installed SDK knows (a name not configured is an Anthropic
    model), with a did-you-mean among both; and for an ``[!answer]`` the note holds."""
    found: list[tuple[int, str]] = []
    prop = note.frontmatter.get("assistants") if note.frontmatter else None
    for name in spec.assistants:
        warning = None if name in assistants else unknown_model(name, known)
        if warning and assistants:
            hint = did_you_mean(name, sorted(assistants)) or did_you_mean(name, sorted(known))
            warning = (f"`{name}` is neither an assistant the vault's config.toml sets "
                       f"([assistants.NAME]: {', '.join(sorted(assistants))}) nor a model the "
                       "installed anthropic SDK knows" + (f" ({hint})" if hint else ""))
        if warning and prop:
            spelled = prop.key.strip("'\"")
            found.append((prop.start + 1, f"property `{spelled}`: assistant {warning}"))
    for callout in note.callouts_of("answer"):
        found.append((callout.start + 1, "this `[!answer]` is left as it is and not judged: "
                                         "a panel note's answers come from its assistants"))
    return found
