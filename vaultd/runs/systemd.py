"""Running as a systemd service: readiness and watchdog notifications, and the unit files.

``notify()`` speaks the sd_notify protocol (a datagram to ``$NOTIFY_SOCKET``) without any
dependency; outside systemd it does nothing. ``install()`` writes the template unit
``vaultd@.service`` for the current user and enables one instance for a vault.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from vaultd.errors import VaultdError

UNIT_DIR = Path("~/.config/systemd/user")
ENV_FILE = Path("~/.config/vaultd/env")  # the unit's EnvironmentFile (%h is the home folder)

TEMPLATE = """\
# vaultd for one vault: the instance name is the vault's path, escaped
# (systemd-escape --path /home/me/Notes -> home-me-Notes; vaultd service install does this).
[Unit]
Description=vaultd: evaluate pending notes in %f
Documentation=https://github.com/vaultd/vaultd#readme
After=default.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start} --log-level INFO run %f
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5
WatchdogSec=60
TimeoutStopSec=20
KillSignal=SIGTERM
EnvironmentFile=-%h/.config/vaultd/env
# sandboxing: read-only everywhere but the vault
ProtectSystem=strict
ReadWritePaths=%f
PrivateTmp=yes
NoNewPrivileges=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RestrictRealtime=yes
SystemCallArchitectures=native
UMask=0077

[Install]
WantedBy=default.target
"""


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``READY=1``) to systemd; False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of a systemd ``EnvironmentFile``: ``NAME=value`` lines (the value may be
    in single or double quotes); blank lines and lines starting with ``#`` or ``;`` are
    skipped, and so is anything else that is not an assignment. Raises OSError."""
    found: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        name, equals, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not name.isidentifier():
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        found[name] = value
    return found


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings systemd expects (half its timeout), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 2_000_000, 0.5)
    except ValueError:
        return None


def exec_start() -> str:
    """How systemd should start this very vaultd (this interpreter, this install)."""
    return f"{sys.executable} -m vaultd"


def render_template() -> str:
    return TEMPLATE.format(exec_start=exec_start())


def escape_path(path: Path) -> str:
    """The instance name for ``path``, as ``systemd-escape --path`` makes it."""
    text = str(path.resolve()).strip("/")
    out = []
    for index, char in enumerate(text):
        if char == "/":
            out.append("-")
        elif char.isascii() and (char.isalnum() or char in "_:" or (char == "." and index)):
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return "".join(out) or "-"


def install(vault: Path, unit_dir: Path | None = None, start: bool = True) -> list[str]:
    """Write the template unit and enable (and start) the vault's instance.

    Returns what was done, a line each, for the command to print.
    """
    if not vault.is_dir():
        raise VaultdError(f"{vault}: not a folder")
    folder = (unit_dir or UNIT_DIR).expanduser()
    unit = folder / "vaultd@.service"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        unit.write_text(render_template(), encoding="utf-8")
    except OSError as exc:  # translated here, at the edge: no traceback reaches a person
        where = exc.filename if exc.filename is not None else unit
        raise VaultdError(f"{where}: cannot write the unit file: "
                          f"{exc.strerror or exc}") from exc
    instance = f"vaultd@{escape_path(vault)}.service"
    done = [f"wrote {unit}"]
    if not start:
        done.append(f"to start it: systemctl --user enable --now '{instance}'")
        return done
    if shutil.which("systemctl") is None:
        raise VaultdError("systemctl not found: is this a systemd system?")
    for args in (["daemon-reload"], ["enable", "--now", instance]):
        result = subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise VaultdError(f"systemctl --user {' '.join(args)}: {result.stderr.strip()}")
        done.append(f"systemctl --user {' '.join(args)}")
    return done
