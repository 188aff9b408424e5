"""Settings: one validated model, resolved in one place.

Each setting comes from the first of: a command-line flag, a ``VAULTD_<NAME>``
environment variable, the vault's ``.vaultd/config.toml``, the default below.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vaultd.cost import Price
from vaultd.errors import ConfigError

# A current model from the installed SDK's list (anthropic.types.Model), not a deprecated one.
DEFAULT_MODEL = "claude-sonnet-5-5"
CONFIG_PATH = Path(".vaultd") / "config.toml"


class Settings(BaseModel):
    """Everything vaultd can be told. Field descriptions are the documentation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="model for ai measures", min_length=1)
    answer_model: str = Field(DEFAULT_MODEL, description="model that writes missing answers",
                              min_length=1)
    max_tokens: int = Field(1024, gt=0, description="max_tokens for ai measures")
    answer_max_tokens: int = Field(4096, gt=0, description="max_tokens for generated answers")
    js_time_limit: float = Field(2.0, gt=0, le=600, description="seconds a programmatic measure "
                                 "may run")
    js_memory_limit_mb: int = Field(64, ge=1, le=4096, description="MiB a programmatic measure "
                                    "may use")
    js_workers: int = Field(2, ge=1, le=64, description="JavaScript worker processes")
    concurrency: int = Field(8, ge=1, le=256, description="model requests in flight at most")
    workers: int = Field(4, ge=1, le=64, description="notes processed at the same time")
    settle: float = Field(0.5, ge=0, le=60, description="seconds a note must be quiet before "
                          "it is read (daemon)")
    max_note_bytes: int = Field(5_000_000, gt=0, description="larger notes are refused")
    write_retry: float = Field(5.0, gt=0, le=3600, description="seconds before the daemon tries "
                               "again to write a note it could not write for a reason outside "
                               "the note (a full disk, a permission); doubled each time, up to "
                               "5 minutes, 8 tries")
    model_retries: int = Field(6, ge=0, le=10, description="retries of a failed model request "
                               "(429, 529, 5xx, timeouts, dropped connections)")
    model_timeout: float = Field(120.0, gt=0, description="seconds to wait for a model reply")
    cache: bool = Field(True, description="reuse stored replies to identical model requests")
    batch_poll: float = Field(10.0, gt=0, le=3600, description="seconds between looks at a "
                              "submitted batch (--batch)")
    prices: dict[str, Price] = Field(default_factory=dict, description="dollars per million "
                                     "tokens, per model: input, output, cache_read, "
                                     "cache_write")


def _env_name(name: str) -> str:
    return f"VAULTD_{name.upper()}"


def load(vault: Path | None, explicit: Mapping[str, Any] | None = None,
         environ: Mapping[str, str] | None = None) -> Settings:
    """Settings for ``vault``: flags, then environment, then the vault's config, then defaults."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if vault is not None:
        path = vault / CONFIG_PATH
        for key, value in _read_toml(path).items():
            values[key] = value
            sources[key] = f"{path}:{_line_of(path, key)}"
    for name in Settings.model_fields:
        if _env_name(name) in environ:
            values[name] = environ[_env_name(name)]
            sources[name] = f"environment variable {_env_name(name)}"
    for key, value in (explicit or {}).items():
        if value is not None:
            values[key] = value
            sources[key] = f"--{key.replace('_', '-')}"
    try:
        return Settings(**values)
    except ValidationError as exc:
        messages = []
        for error in exc.errors():
            key = str(error["loc"][0]) if error["loc"] else "?"
            where = sources.get(key, "config")
            reason = str(error["msg"])
            if error["type"] == "extra_forbidden":
                reason = "unknown setting (known: " + ", ".join(Settings.model_fields) + ")"
            messages.append(f"{where}: {key}: {reason}")
        raise ConfigError("\n".join(messages)) from exc


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    section = data.get("vaultd", data)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [vaultd] must be a table")
    return dict(section)


def _line_of(path: Path, key: str) -> int:
    try:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.match(rf"\s*{re.escape(key)}\s*=", line):
                return number
    except OSError:
        pass
    return 1
