"""The package layout's promises that a user can see: a light ``vaultd status``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT

# Loaded by `vaultd run` only: the model client, the sandbox, the watcher, the daemon.
HEAVY = ("anthropic", "quickjs", "watchdog", "vaultd.runs.daemon", "vaultd.runs.watcher",
         "vaultd.edges.sandbox", "vaultd.edges.model", "vaultd.edges.cache", "sqlite3")


def imported(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """``python -X importtime -m vaultd ARGS``, and every module it imported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "vaultd", *args],
                          capture_output=True, text=True, env=env, timeout=120,
                          stdin=subprocess.DEVNULL, check=False)
    modules = {m.group(1).strip() for m in
               re.finditer(r"^import time:\s*\d+\s*\|\s*\d+\s*\|\s*(.+)$", done.stderr, re.M)}
    return done, modules


def test_status_imports_neither_the_model_client_the_sandbox_nor_the_watcher(
        tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    shutil.copytree(ROOT / "sample_vault", vault)
    done, modules = imported("status", str(vault))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "vaultd.obsidian.status" in modules  # the check reads real import lines
    loaded = sorted(m for m in modules
                    if any(m == heavy or m.startswith(heavy + ".") for heavy in HEAVY))
    assert loaded == []
