"""Settings: one validated model, resolved in one place.

Each setting comes from the first of: a command-line flag, a ``VAULTD_<NAME>``
environment variable, the vault's ``.vaultd/config.toml``, the default below. A bad
setting is a :class:`ConfigError` naming where it was set (``config.toml:LINE: key:
message``, with a hint); :func:`config_toml` writes the commented file ``vaultd init``
puts in a vault, generated from :class:`Settings` so that it never drifts from it.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from vaultd.errors import ConfigError, did_you_mean

# A current model from the installed SDK's list (anthropic.types.Model), not a deprecated one.
DEFAULT_MODEL = "claude-sonnet-5-5"
CONFIG_PATH = Path(".vaultd") / "config.toml"
# A property key's start that YAML, Obsidian, Dataview and Bases all read unquoted.
PREFIX_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
# Not allowed in a file name on Windows or macOS, nor in an Obsidian link: an assistant's
# name (here) and a panel note's (vaultd.note.panel) become parts of answer notes' names.
UNSAFE_NAME_CHARS = '#^[]|:*?"<>\\/'
UNSAFE_NAME = re.compile("[" + re.escape(UNSAFE_NAME_CHARS) + r"\x00-\x1f\x7f]")
PROVIDERS = ("anthropic", "openai")
# The variable a provider's key is read from when an assistant does not name one.
DEFAULT_KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Price(BaseModel):
    """Dollars per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(default=None, ge=0)  # default: 10% of input
    cache_write: float | None = Field(default=None, ge=0)  # default: 125% of input


class Assistant(BaseModel):
    """An ``[assistants.NAME]`` table: this model, through this API, with these settings
    (shared/panel-format.md, *Assistants*). ``api_key_env`` is always set once validated (the
    provider's variable when the table does not name one; ``""``: no key needed);
    ``max_tokens`` None means the vault's ``answer_max_tokens`` (:func:`resolve_assistant`
    fills it in), ``concurrency`` None no limit of its own, ``prices`` None the vault's
    ``prices`` for the model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: Literal["anthropic", "openai"]
    model: str = Field(min_length=1)
    base_url: str | None = None
    api_key_env: str = ""
    max_tokens: int | None = Field(default=None, gt=0)
    system: str | None = None
    concurrency: int | None = Field(default=None, ge=1, le=256)
    prices: Price | None = None

    @model_validator(mode="before")
    @classmethod
    def _key_env_default(cls, data: Any) -> Any:
        provider = data.get("provider") if isinstance(data, dict) else None
        if isinstance(provider, str) and provider in DEFAULT_KEY_ENV \
                and "api_key_env" not in data:
            data = {**data, "api_key_env": DEFAULT_KEY_ENV[data["provider"]]}
        return data

    @field_validator("provider", mode="before")
    @classmethod
    def _provider(cls, value: Any) -> Any:
        if value not in PROVIDERS:
            hint = did_you_mean(value, PROVIDERS) if isinstance(value, str) else ""
            shown = repr(value) if isinstance(value, str) else _toml_or_repr(value)
            raise ValueError(f"{shown} is not one of {', '.join(PROVIDERS)}"
                             + (f" ({hint})" if hint else ""))
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a model's name, not blank")
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        # The value is never shown: a URL may hold a password.
        if value is None:
            return None
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises ValueError for a port that is not a number
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname \
                or any(ch.isspace() for ch in value):
            raise ValueError("must be an http:// or https:// URL, e.g. "
                             "\"http://127.0.0.1:11434/v1\"")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not hold a user name or password (the key is read from "
                             "the variable `api_key_env` names)")
        if parts.query or parts.fragment:
            raise ValueError("must not hold a query or fragment (?… or #…): it is the API's "
                             "base, e.g. \"https://api.openai.com/v1\"")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _key_env(cls, value: str) -> str:
        # The value is never shown: it may be a key put here by mistake.
        if value and not _ENV_NAME.match(value):
            raise ValueError("must be the NAME of the environment variable that holds the key "
                             "(letters, digits and _, e.g. \"OPENAI_API_KEY\"), never the key "
                             "itself; \"\" when none is needed")
        return value


def _safe_name(name: str) -> str:
    """An assistant's name, as a panel note names it and as answer notes' names hold it."""
    if not name.strip():
        raise ValueError("an assistant's name must not be blank")
    bad = "".join(sorted(set(UNSAFE_NAME.findall(name))))
    if bad:
        raise ValueError(f"the name holds {json.dumps(bad)}, not allowed in a file name "
                         f"(no {UNSAFE_NAME_CHARS} in a name)")
    if name != name.strip():
        raise ValueError("an assistant's name must not start or end with a space")
    return name


AssistantName = Annotated[str, AfterValidator(_safe_name)]


class Settings(BaseModel):
    """Everything vaultd can be told. Field descriptions are the documentation: each is the
    one line ``vaultd init`` writes above the setting in ``config.toml``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(DEFAULT_MODEL, min_length=1, description="model for ai measures "
                       "(a note's own `model` property, or a measure's, wins)")
    answer_model: str = Field(DEFAULT_MODEL, min_length=1, description="model that writes "
                              "missing answers (a note's own `answer_model` wins)")
    max_tokens: int = Field(1024, gt=0, description="max_tokens for ai measures (a note's "
                            "or a measure's own wins)")
    answer_max_tokens: int = Field(4096, gt=0, description="max_tokens for generated answers "
                                   "(a note's own wins)")
    js_time_limit: float = Field(2.0, gt=0, le=600, description="seconds a programmatic "
                                 "measure may run")
    js_memory_limit_mb: int = Field(64, ge=1, le=4096, description="MiB a programmatic "
                                    "measure may use")
    js_workers: int = Field(2, ge=1, le=64, description="JavaScript worker processes")
    concurrency: int = Field(8, ge=1, le=256, description="model requests in flight at most")
    workers: int = Field(0, ge=0, le=256, description="notes processed at the same time; 0: "
                         "as many as `concurrency`, so that every model slot can be used")
    processes: int = Field(0, ge=0, le=64, description="processes a --once run deals its "
                           "notes out to; 0: one per core (up to 4), once at least 100 notes "
                           "per process are pending")
    settle: float = Field(0.5, ge=0, le=60, description="seconds a note must be quiet before "
                          "it is read (daemon)")
    max_note_bytes: int = Field(5_000_000, gt=0, description="larger notes are refused, "
                                "untouched")
    write_retry: float = Field(5.0, gt=0, le=3600, description="seconds before the daemon tries "
                               "again to write a note it could not write for a reason outside "
                               "the note (a full disk, a permission); doubled each time, up to "
                               "5 minutes, 8 tries")
    model_retries: int = Field(6, ge=0, le=10, description="retries of a failed model request "
                               "(429, 529, 5xx, timeouts, dropped connections), by the SDK's "
                               "policy; --batch's calls too")
    model_timeout: float = Field(120.0, gt=0, description="seconds a model request may take in "
                                 "all, its reply included")
    cache: bool = Field(True, description="reuse stored replies to identical model requests "
                        "(a note's own `cache: false` turns it off there)")
    batch_poll: float = Field(10.0, gt=0, le=3600, description="seconds between looks at a "
                              "submitted batch (--batch)")
    property_prefix: str = Field("eval_", description="results are also written as "
                                 "properties named <prefix><measure id>")
    report_path: str = Field("vaultd report.md", description="the note, relative to the "
                             "vault, that the vault report is written to")
    prices: dict[str, Price] = Field(default_factory=dict, description="dollars per million "
                                     "tokens, per model: input, output, cache_read, "
                                     "cache_write")
    max_cost_usd: float | None = Field(None, gt=0, description="a note whose run is estimated "
                                       "to cost more US dollars than this is not started "
                                       "(Status: Error, with the figures); inf: no limit (a "
                                       "note's own `max_cost_usd` wins)")
    assistants: dict[AssistantName, Assistant] = Field(
        default_factory=dict, description="assistants a panel note's `assistants` may name: "
        "[assistants.NAME] tables with provider (anthropic, openai) and model, optionally "
        "base_url, api_key_env, max_tokens, system, concurrency, prices; a name not set here "
        "is taken as an Anthropic model name; not settable by an environment variable")

    @field_validator("property_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not PREFIX_PATTERN.match(value):
            raise ValueError("must start with a letter or _, then letters, digits, _ or -")
        return value

    @field_validator("report_path")
    @classmethod
    def _inside_vault(cls, value: str) -> str:
        parts = PurePosixPath(value.replace("\\", "/")).parts
        if not value.strip() or PurePosixPath(value).is_absolute() or ".." in parts:
            raise ValueError("must be a path inside the vault, relative to it")
        if any(part.startswith(".") for part in parts):
            raise ValueError("must not be in a dot-folder (Obsidian does not show those)")
        if not value.lower().endswith(".md"):
            raise ValueError("must be a note: a name ending in .md")
        return value

    @field_validator("max_cost_usd")
    @classmethod
    def _no_limit(cls, value: float | None) -> float | None:
        return None if value is not None and math.isinf(value) else value  # TOML has no null

    @property
    def note_workers(self) -> int:
        """How many notes are processed at the same time."""
        return self.workers or self.concurrency


def resolve_assistant(settings: Settings, name: str) -> Assistant:
    """The assistant ``name`` stands for: the vault's ``[assistants.NAME]``, else an Anthropic
    assistant with ``model = name`` (the contract: a name that is not configured is taken as
    an Anthropic model name); ``max_tokens`` filled in from ``answer_max_tokens`` where the
    assistant sets none. ``name`` must not be blank (ValidationError)."""
    found = settings.assistants.get(name)
    if found is None:
        found = Assistant(provider="anthropic", model=name)
    if found.max_tokens is None:
        found = found.model_copy(update={"max_tokens": settings.answer_max_tokens})
    return found


_EXAMPLES = {"prices": 'prices = { "claude-sonnet-5-5" = { input = 3.0, output = 15.0 } }'}
# Commented out twice over (each line starts "#   "), so that uncommenting the settings'
# "# name = default" lines leaves them be; under a [vaultd] table they are
# [vaultd.assistants.NAME].
_ASSISTANT_EXAMPLES = """\
e.g. (in place of `assistants = {}`; under a [vaultd] table: [vaultd.assistants.NAME])
[assistants.claude]
provider = "anthropic"                   # the Messages API, through the anthropic SDK
model = "claude-sonnet-5-5"

[assistants.gpt]
provider = "openai"                      # any OpenAI-compatible Chat Completions API
model = "gpt-5"
api_key_env = "OPENAI_API_KEY"           # the NAME of the variable that holds the key
prices = { input = 1.25, output = 10.0 } # dollars per million tokens

[assistants.local-llama]
provider = "openai"
model = "llama3.3"
base_url = "http://127.0.0.1:11434/v1"   # Ollama; vLLM, LM Studio, OpenRouter alike
api_key_env = ""                         # none needed
concurrency = 2                          # its own limit of requests in flight
"""


def config_toml() -> str:
    """The commented ``config.toml`` for a new vault: every setting at its default.

    Each setting is a commented-out ``name = default`` line under its description, so the
    file changes nothing until a line is uncommented, and defaults that change in a later
    vaultd still reach the vault.
    """
    lines = [
        "# vaultd settings for this vault (written by `vaultd init`).",
        "#",
        "# Every setting is listed at its default, commented out: remove the \"# \" before a",
        "# setting to change it. A command-line flag or a VAULTD_<NAME> environment variable",
        "# wins over this file. The settings may also go under a [vaultd] table.",
    ]
    for name, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        lines += ["", f"# {info.description}", f"# {name} = {_toml(default)}"]
        if name in _EXAMPLES:
            lines.append(f"#   e.g. {_EXAMPLES[name]}")
        if name == "assistants":
            lines += [f"#   {line}".rstrip() for line in _ASSISTANT_EXAMPLES.splitlines()]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if value is None:  # a setting that is off by default: TOML has no null, `inf` is no limit
        return "inf"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict) and not value:
        return "{}"
    raise TypeError(f"no TOML form for {value!r}")


def _toml_or_repr(value: Any) -> str:
    try:
        return _toml(value)
    except TypeError:
        return repr(value)


def _env_name(name: str) -> str:
    return f"VAULTD_{name.upper()}"


def load(vault: Path | None, explicit: Mapping[str, Any] | None = None,
         environ: Mapping[str, str] | None = None) -> Settings:
    """Settings for ``vault``: flags, then environment, then the vault's config, then defaults."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    text = ""
    path = vault / CONFIG_PATH if vault is not None else None
    if path is not None:
        text, table = _read_toml(path)
        for key, value in table.items():
            values[key] = value
            sources[key] = str(path)
    refused: list[str] = []  # settings no environment variable can give
    for name in Settings.model_fields:
        if name in _NOT_FROM_ENVIRONMENT:
            if _env_name(name) in environ:
                refused.append(f"environment variable {_env_name(name)}: {name}: "
                               f"{_NOT_FROM_ENVIRONMENT[name]}")
            continue
        if _env_name(name) in environ:
            values[name] = environ[_env_name(name)]
            sources[name] = f"environment variable {_env_name(name)}"
    for key, value in (explicit or {}).items():
        if value is not None:
            values[key] = value
            sources[key] = f"--{key.replace('_', '-')}"
    messages: list[tuple[int, str]] = []  # the file's in line order, then the rest
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(str(part) for part in error["loc"] if part != "[key]") or ("?",)
            where, line = sources.get(loc[0], "config"), 1 << 30
            if path is not None and where == str(path):
                line = _locate(text, loc)
                where = f"{path}:{line}"
            messages.append((line, f"{where}: {'.'.join(loc)}: {_reason(loc, error)}"))
        messages.sort(key=lambda item: item[0])
        messages += [(1 << 30, message) for message in refused]
        raise ConfigError("\n".join(message for _, message in messages)) from exc
    if refused:
        raise ConfigError("\n".join(refused))
    return settings


_NOT_FROM_ENVIRONMENT = {
    "assistants": "cannot be set by an environment variable: write [assistants.NAME] tables "
                  "in the vault's .vaultd/config.toml (and unset the variable)",
}
# What a missing key of an assistant looks like when given.
_REQUIRED_EXAMPLES = {"provider": 'provider = "openai"', "model": 'model = "gpt-5"'}


def _model_at(loc: tuple[str, ...]) -> type[BaseModel] | None:
    """The model whose fields are the keys known at ``loc``'s last part."""
    if len(loc) == 1:
        return Settings
    if loc[0] == "prices" and len(loc) == 3:
        return Price
    if loc[0] == "assistants" and len(loc) == 3:
        return Assistant
    if loc[0] == "assistants" and len(loc) == 4 and loc[2] == "prices":
        return Price
    return None


def _reason(loc: tuple[str, ...], error: Any) -> str:
    """What is wrong with the setting at ``loc``, and how to put it right."""
    if error["type"] == "extra_forbidden":
        model = _model_at(loc)
        known = list(model.model_fields) if model is not None else []
        hint = did_you_mean(loc[-1], known) or "known: " + ", ".join(known)
        return f"unknown setting ({hint})"
    if loc[0] == "assistants" and len(loc) == 2 and error["type"] == "model_type":
        return (f"must be a table: [assistants.{loc[1]}] with provider and model (e.g. "
                f"{_REQUIRED_EXAMPLES['provider']}, {_REQUIRED_EXAMPLES['model']})")
    if loc[0] == "assistants" and len(loc) == 3 and error["type"] == "missing":
        return f"missing (e.g. {_REQUIRED_EXAMPLES.get(loc[2], loc[2] + ' = ...')})"
    if loc[0] == "assistants" and len(loc) == 3 and loc[2] == "model" \
            and error["type"] == "string_too_short":
        return "must be a model's name, not empty"
    reason = str(error["msg"]).removeprefix("Value error, ")
    field = Settings.model_fields.get(loc[0])
    if len(loc) == 1 and field is not None:
        default = field.get_default(call_default_factory=True)
        if default is not None and not isinstance(default, dict):
            reason += f" (default: {_toml(default)})"
    return reason


def _read_toml(path: Path) -> tuple[str, dict[str, Any]]:
    """The file's text and its settings (under ``[vaultd]`` if it has that table)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return "", {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        at = re.search(r"\s*\(at (?:line (\d+), column \d+|end of document)\)$", message)
        if at:
            line = at.group(1) or str(max(1, len(text.splitlines())))
            message = f"{line}: {message[: at.start()]}"
        raise ConfigError(f"{path}:{message}" if at else f"{path}: {message}") from exc
    if "vaultd" not in data:
        return text, data
    section = data["vaultd"]
    if not isinstance(section, dict):
        raise ConfigError(f"{path}:{_locate(text, ('vaultd',))}: vaultd: must be a table "
                          "([vaultd])")
    outside = [key for key in data if key != "vaultd"]
    if outside:
        raise ConfigError("\n".join(
            f"{path}:{_locate(text, (key,))}: {key}: outside the [vaultd] table (move it "
            "under [vaultd], or put every setting at the top level)" for key in outside))
    return text, dict(section)


_TABLE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
_ASSIGN = re.compile(r"^\s*((?:\"[^\"]*\"|'[^']*'|[^=#\"'])+?)\s*=")


def _locate(text: str, loc: tuple[str, ...]) -> int:
    """The 1-based line that sets the setting at ``loc``, or its closest enclosing one."""
    best, depth = 1, 0
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), 1):
        header = _TABLE.match(line)
        if header:
            table = _dotted(header.group(1))
            key = table[1:] if table[:1] == ("vaultd",) else table
        else:
            assign = _ASSIGN.match(line)
            if not assign:
                continue
            key = _dotted(assign.group(1))
            key = (table[1:] if table[:1] == ("vaultd",) else table) + key
        if key and key == loc[: len(key)] and len(key) > depth:
            best, depth = number, len(key)
    return best


def _dotted(key: str) -> tuple[str, ...]:
    """A TOML key (``a."b.c".d``) as its parts."""
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([^.\s"\']+)', key)
    return tuple(next(p for p in part if p) if any(part) else "" for part in parts)
