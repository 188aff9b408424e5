"""Shared fixtures: a vault on disk, the loopback Messages API, and vaultd's command line."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vaultd.cli import main

from .fakeapi import FakeMessagesAPI

ROOT = Path(__file__).resolve().parent.parent
EVALUATED = re.compile(
    r"^(?:Evaluated: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d|tokens_in: \d+|tokens_out: \d+"
    r"|cost_usd: [\d.]+)(\r?\n)", re.M)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--load", action="store_true", default=False,
                     help="also run the long load and soak tests (tests/test_load.py); "
                     "so does VAULTD_LOAD=1")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "load: a long load or soak test, run with --load")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The load tests are left out (deselected, not skipped) unless asked for."""
    if config.getoption("--load") or os.environ.get("VAULTD_LOAD") == "1":
        return
    keep = [item for item in items if "load" not in item.keywords]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if "load" in i.keywords])
        items[:] = keep


@dataclass
class Ran:
    code: int
    out: str
    err: str


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    path = tmp_path / "vault"
    path.mkdir()
    return path


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMessagesAPI]:
    """The loopback Messages API, with the SDK's environment pointed at it."""
    with FakeMessagesAPI() as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
        monkeypatch.delenv("ANTHROPIC_CONFIG_DIR", raising=False)
        yield server


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ANTHROPIC_CONFIG_DIR", raising=False)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")  # nothing may be asked


def run_cli(*args: str, capsys: pytest.CaptureFixture[str]) -> Ran:
    """``vaultd ARGS`` in this process: exit code, stdout, stderr."""
    out = io.StringIO()
    code = main(list(args), out=out)
    return Ran(code, out.getvalue(), capsys.readouterr().err)


def run_process(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Ran:
    """``python -m vaultd ARGS`` as a real process."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-m", "vaultd", *args], capture_output=True, text=True,
        env=full_env, timeout=timeout, stdin=subprocess.DEVNULL, check=False,
    )
    return Ran(done.returncode, done.stdout, done.stderr)


def without_timestamp(text: str) -> str:
    """The note's text without the facts of the run: ``Evaluated``, tokens and cost."""
    return EVALUATED.sub("", text)
