"""``vaultd init``: the files a vault starts with. Never overwrites anything.

Two files: ``.vaultd/config.toml``, every setting commented out at its default (generated
from :class:`~vaultd.config.Settings`), and a template note in the vault's templates folder
that Obsidian's Templates plugin inserts: ``Status: Draft``, a query to fill in, an
empty answer for the answer model to write, and the seed note's four measures. The person
writes the question, then sets ``Status: Pending`` (a template inserted as Pending would be
run, and fail for want of a question, before anyone had typed it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vaultd.config import CONFIG_PATH, config_toml, load
from vaultd.edges.vault import DEFAULT_TEMPLATES, TEMPLATES_SETTINGS, display_path, templates_folder
from vaultd.edges.writer import Writer
from vaultd.errors import VaultdError
from vaultd.obsidian.publish import publish, report_paths

TEMPLATE_NAME = "vaultd question.md"

_SEED_MEASURES = """\
* ---
  * id: mentioned_treatments
  * description: "AI Task: Extract all mentioned treatment names"
  * type: ai
  * prompt: "Based ONLY on the provided context, list all specific prescription medication \
BRAND NAMES or therapies mentioned, in the order they appear. Exclude generic names. Your \
response MUST be a valid JSON array of strings."
* ---
  * params.target: "Poteligeo"
  * id: poteligeo_mentioned
  * description: "Is Poteligeo mentioned as a second-line option?"
  * type: programmatic
  * input: mentioned_treatments
  * logic: "return input.includes(params.target);"
* ---
  * params.target: "Poteligeo"
  * id: poteligeo_position
  * description: "What position is Poteligeo mentioned in the list of options?"
  * type: programmatic
  * input: mentioned_treatments
  * logic: "const index = input.indexOf(params.target); return index === -1 ? 'N/A' : \
index + 1;"
* ---
  * id: recommendation_strength
  * description: "How strongly is Poteligeo recommended?"
  * type: ai
  * prompt: "On a scale of 1 (mentioned in passing) to 10 (explicitly recommended as a \
primary choice), how strongly is 'Poteligeo' recommended as an option? Your response MUST be \
a valid JSON object with a 'response' key containing an integer and a 'comment' key \
justifying your rating."
"""


def template_note() -> str:
    """The template note, in the seed note's shape: write the question, set Pending."""
    measures = "\n".join(f"> {line}" for line in _SEED_MEASURES.splitlines())
    return (
        "---\nStatus: Draft\n---\n\n***\n\n"
        "> [!query]\n> ```query-text\n> \n> ```\n\n***\n\n"
        "> [!answer]\n> ```answer-text\n> ```\n\n***\n\n"
        f"> [!measures]-\n> ```measures-md\n{measures}\n> ```\n"
    )


@dataclass(frozen=True)
class Written:
    path: Path
    created: bool  # False: it was there already, and is left as it is


def init_vault(vault: Path) -> list[Written]:
    """Write the vault's config and template note, each only if it is not there yet."""
    return [
        _create(vault / CONFIG_PATH, config_toml(), private=True),  # in vaultd's own folder
        _create(templates_folder(vault) / TEMPLATE_NAME, template_note()),
    ]


def initialise(vault: Path) -> Iterator[str]:
    """``vaultd init``: the config, the template note and the report, a line for each.

    Nothing that exists is overwritten; the report is written only when neither it nor its
    Bases file exists (from then on the daemon keeps it up to date; it never creates one)."""
    for written in init_vault(vault):
        name = display_path(written.path, vault)
        yield f"wrote {name}" if written.created else f"kept {name} (it exists)"
    settings = load(vault)
    report, base = report_paths(vault, settings)
    if report.exists() or base.exists():
        for path in (report, base):
            if path.exists():
                yield f"kept {display_path(path, vault)} (it exists)"
    else:
        for item in publish(vault, settings, Writer(vault)).files:
            yield f"wrote {display_path(item.path, vault)}"
    if uses_default_templates(vault):
        yield (f"vaultd: in Obsidian, set the Templates core plugin's folder to "
               f"{DEFAULT_TEMPLATES} to insert the template")


def uses_default_templates(vault: Path) -> bool:
    """Whether the Templates plugin's folder is not set (so it needs setting to ours)."""
    return not (vault / TEMPLATES_SETTINGS).is_file()


def _create(path: Path, text: str, private: bool = False) -> Written:
    """Create ``path`` holding ``text``; ``private``: its folder 0700 and the file 0600, as
    everything in ``VAULT/.vaultd`` is (see SECURITY.md); a link at that folder is refused,
    not followed."""
    if private and path.parent.is_symlink():
        raise VaultdError(f"{path.parent}: is a symbolic link: vaultd never follows a link "
                          "in its folder .vaultd; remove it (vaultd did not touch it)")
    try:
        path.parent.mkdir(mode=0o700 if private else 0o777, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                     0o600 if private else 0o666)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
    except FileExistsError:
        return Written(path, created=False)
    except OSError as exc:
        raise VaultdError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    return Written(path, created=True)
