"""Errors at one boundary: every command, given a missing or unwritable path, says
``vaultd: <what>: <why>`` and exits non-zero, and never prints a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import run_process

MISSING = "/nonexistent/vault"
UNWRITABLE = "/proc/sys"  # a folder that even root cannot write files into


@pytest.mark.parametrize(("args", "code", "says"), [
    (("init", MISSING), 2, f"vaultd: {MISSING}: not a folder"),
    (("init", UNWRITABLE), 1, f"vaultd: {UNWRITABLE}/.vaultd/config.toml: cannot write: "),
    (("run", MISSING, "--once"), 2, f"vaultd: {MISSING}: not a folder"),
    (("run", MISSING), 2, f"vaultd: {MISSING}: not a folder"),
    (("report", MISSING), 2, f"vaultd: {MISSING}: not a folder"),
    (("report", UNWRITABLE), 1, f"vaultd: {UNWRITABLE}/vaultd report.md: cannot create: "),
    (("status", MISSING), 2, f"vaultd: {MISSING}: not a folder"),
    (("check", MISSING), 1, f"{MISSING}: no such file or folder"),
    (("service", "install", "{vault}", "--unit-dir", "/proc/nope", "--no-start"), 1,
     "vaultd: /proc/nope: cannot write the unit file: No such file or directory"),
    (("service", "install", MISSING, "--no-start"), 1, f"vaultd: {MISSING}: not a folder"),
])
def test_a_bad_path_is_a_message_and_an_exit_code_never_a_traceback(
    vault: Path, args: tuple[str, ...], code: int, says: str
) -> None:
    ran = run_process(*(arg.format(vault=vault) for arg in args))
    assert ran.code == code, ran
    assert says in ran.out + ran.err, ran
    assert "Traceback" not in ran.out + ran.err, ran
