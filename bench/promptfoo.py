"""promptfoo 0.123 doing the bench's work, for comparison with vaultd.

The work, per question: the question is the prompt (one provider call, the answer); the answer is
judged by two ``llm-rubric`` asserts (the grader is the same Anthropic Messages API) and checked
by two ``javascript`` asserts. ``--repeat R`` asks every question R times, ``--no-cache``, ``-j C``.

promptfoo is not vendored: it is installed by npm into ``bench/.promptfoo/`` (git-ignored),
with the npm package ``node`` (a Node.js 22 binary: promptfoo 0.123 refuses to run on a Node.js
older than 22.22, and Debian's is 20)::

    mkdir -p bench/.promptfoo && cd bench/.promptfoo && npm install promptfoo@0.123.1 node@22

``bench/.promptfoo/node_modules/.bin/node`` is preferred to ``node`` on ``PATH``.

Everything that would reach outside the machine is turned off through promptfoo's own settings
(see ``_env``); the only network traffic left is to ``api_url`` (and one fire-and-forget
telemetry-disabled notice that promptfoo sends even with telemetry disabled, which fails at
once without a network and is routed to a dead loopback proxy here, so it cannot hang).
Stdlib only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "INSTALL",
    "NODE_INSTALL",
    "PROMPTFOO_DIR",
    "PROMPTFOO_VERSION",
    "PromptfooRun",
    "grading_reply",
    "is_grading",
    "missing",
    "run",
]

PROMPTFOO_VERSION = "0.123.1"
ROOT = Path(__file__).resolve().parents[1]
PROMPTFOO_DIR: Path = ROOT / "bench" / ".promptfoo"
INSTALL = ("mkdir -p bench/.promptfoo && cd bench/.promptfoo && "
           "npm install promptfoo@0.123.1 node@22")
NODE_INSTALL = INSTALL
NODE_MIN = (22, 22, 0)
"""promptfoo 0.123.1's ``engines.node`` (``>=22.22.0``), enforced by its entrypoint."""

_PACKAGE = PROMPTFOO_DIR / "node_modules" / "promptfoo"
_ENTRYPOINT = _PACKAGE / "dist" / "src" / "entrypoint.js"

# The seed note's two ai measure prompts (tests/data/seed-note.md), used as the rubrics.
RUBRIC_TREATMENTS = (
    "Based ONLY on the provided context, list all specific prescription medication BRAND NAMES "
    "or therapies mentioned, in the order they appear. Exclude generic names. Your response "
    "MUST be a valid JSON array of strings."
)
RUBRIC_STRENGTH = (
    "On a scale of 1 (mentioned in passing) to 10 (explicitly recommended as a primary choice), "
    "how strongly is 'Poteligeo' recommended as an option? Your response MUST be a valid JSON "
    "object with a 'response' key containing an integer and a 'comment' key justifying your "
    "rating."
)
# The seed note's two programmatic measures, as javascript asserts on the answer.
JS_MENTIONED = "output.includes('Poteligeo')"
JS_POSITION = """\
let names;
try {
  const parsed = JSON.parse(output);
  names = Array.isArray(parsed) ? parsed.map(String) : null;
} catch (e) {
  names = null;
}
if (!names) {
  names = (output.match(/\\b[A-Z][A-Za-z]{3,}\\b/g) || []);
}
const index = names.indexOf('Poteligeo');
return index === -1
  ? { pass: false, score: 0, reason: 'Poteligeo not among the brand names' }
  : { pass: true, score: 1 / (index + 1), reason: 'Poteligeo is brand name ' + (index + 1) };
"""

# promptfoo 0.123's DEFAULT_GRADING_PROMPT (llm-rubric): a system message, sent by its
# anthropic provider as the Messages API's `system`, then "<Output>...</Output><Rubric>...".
_GRADER_SYSTEM = "You are grading output according to a user-specified rubric."
_RUBRIC_TAGS = re.compile(r"<Output>.*</Output>\s*<Rubric>.*</Rubric>", re.DOTALL)


def _version(text: str) -> tuple[int, int, int] | None:
    found = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
    if found is None:
        return None
    return int(found[1]), int(found[2]), int(found[3])


def _node_version(node: str) -> tuple[int, int, int] | None:
    try:
        done = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return _version(done.stdout) if done.returncode == 0 else None


def _node() -> tuple[str | None, str]:
    """A Node.js new enough for promptfoo (else None) and what was found, for a message."""
    candidates: list[str] = []
    local = PROMPTFOO_DIR / "node_modules" / ".bin" / "node"
    if local.exists():
        candidates.append(str(local))
    on_path = shutil.which("node")
    if on_path is not None:
        candidates.append(on_path)
    seen: list[str] = []
    for node in candidates:
        version = _node_version(node)
        if version is not None and version >= NODE_MIN:
            return node, ""
        shown = "v" + ".".join(map(str, version)) if version else "unusable"
        seen.append(f"{shown} at {node}")
    return None, ", ".join(seen) or "none on PATH"


def _installed_version() -> str | None:
    try:
        package = json.loads((_PACKAGE / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    version = package.get("version") if isinstance(package, dict) else None
    return version if isinstance(version, str) else None


def missing() -> str | None:
    """None when promptfoo 0.123.x is installed there and node is on PATH; else a one-line
    message saying what is missing and the command that installs it."""
    version = _installed_version()
    if version is None or not version.startswith("0.123.") or not _ENTRYPOINT.exists():
        found = f"found {version}" if version else "not installed"
        return (
            f"promptfoo {PROMPTFOO_VERSION} is missing from {PROMPTFOO_DIR} ({found}); "
            f"install it with: {INSTALL}"
        )
    node, seen = _node()
    if node is None:
        return (
            f"promptfoo {version} needs Node.js >= {'.'.join(map(str, NODE_MIN))} "
            f"(found {seen}); install one with: {NODE_INSTALL}"
        )
    return None


def is_grading(text: str) -> bool:
    """Whether a Messages API request's text (all its messages' and system text joined, as
    tests.fakeapi.Request.text has it) is one of promptfoo's llm-rubric grader prompts."""
    return _GRADER_SYSTEM in text or _RUBRIC_TAGS.search(text) is not None


def grading_reply() -> str:
    """The text a grader replies with (the JSON promptfoo's llm-rubric expects: pass, score,
    reason)."""
    return json.dumps({"reason": "The output satisfies the rubric.", "pass": True, "score": 1.0})


@dataclass(frozen=True)
class PromptfooRun:
    wall: float
    """Seconds, process start to exit."""
    cpu: float
    """CPU-seconds (user + system) of the promptfoo process and its reaped children."""
    returncode: int
    """promptfoo's exit status (100 when some test failed; negative: killed by that signal)."""
    results: int
    """Test results in promptfoo's output JSON (expected: questions x repeat)."""
    passed: int
    errors: int
    """Results with an error (a failed provider call etc.)."""
    log_tail: str
    """The last ~30 lines of its stdout and stderr."""


def _provider(model: str) -> dict[str, Any]:
    return {"id": f"anthropic:messages:{model}", "config": {"max_tokens": 1024}}


def config(questions: list[str], model: str) -> dict[str, Any]:
    """The promptfoo config (promptfooconfig.yaml; JSON is YAML) for the bench's work."""
    return {
        "description": "vaultd bench: promptfoo doing the same work",
        "prompts": [{"id": "question", "raw": "{{question}}"}],
        "providers": [_provider(model)],
        "defaultTest": {
            "options": {"provider": _provider(model)},
            "assert": [
                {"type": "llm-rubric", "metric": "mentioned_treatments",
                 "value": RUBRIC_TREATMENTS},
                {"type": "llm-rubric", "metric": "recommendation_strength",
                 "value": RUBRIC_STRENGTH},
                {"type": "javascript", "metric": "poteligeo_mentioned", "value": JS_MENTIONED},
                {"type": "javascript", "metric": "poteligeo_position", "value": JS_POSITION},
            ],
        },
        "tests": [{"vars": {"question": question}} for question in questions],
        "sharing": False,
    }


def _env(work: Path, api_url: str, node: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in list(env):
        if name.lower() in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}:
            del env[name]
    env.update({
        "ANTHROPIC_BASE_URL": api_url,
        "ANTHROPIC_API_KEY": "bench-key",
        # Its ~/.promptfoo (promptfoo.yaml, promptfoo.db, logs) and cache, under `work`.
        "PROMPTFOO_CONFIG_DIR": str(work / "promptfoo-home"),
        "PROMPTFOO_LOG_DIR": str(work / "promptfoo-home" / "logs"),
        "PROMPTFOO_CACHE_PATH": str(work / "promptfoo-home" / "cache"),
        "PROMPTFOO_CACHE_ENABLED": "false",
        # No PostHog telemetry, no version check (api.promptfoo.dev), no sharing, no
        # share-by-email prompt, no remote (promptfoo.app) generation or grading.
        "PROMPTFOO_DISABLE_TELEMETRY": "1",
        "PROMPTFOO_DISABLE_UPDATE": "1",
        "PROMPTFOO_DISABLE_SHARING": "1",
        "PROMPTFOO_DISABLE_SHARE_EMAIL_REQUEST": "1",
        "PROMPTFOO_DISABLE_REMOTE_GENERATION": "1",
        "PROMPTFOO_DISABLE_REDTEAM_REMOTE_GENERATION": "1",
        # With telemetry disabled it still POSTs one "telemetry disabled" event to
        # r.promptfoo.app (fire and forget): send everything but loopback to a closed port.
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost,::1",
        "NO_COLOR": "1",
        "FORCE_COLOR": "0",
        "PATH": os.pathsep.join([str(Path(node).parent), env.get("PATH", "")]),
    })
    return env


def _count(path: Path) -> tuple[int, int, int]:
    """(results, passed, errors) from promptfoo's JSON output, zeros if it is absent."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0, 0, 0
    outer = data.get("results") if isinstance(data, dict) else None
    rows = outer.get("results") if isinstance(outer, dict) else None
    if not isinstance(rows, list):
        return 0, 0, 0
    rows = [row for row in rows if isinstance(row, dict)]
    passed = sum(1 for row in rows if row.get("success") is True)
    # ResultFailureReason.ERROR == 2: the provider call (or the eval of the row) failed.
    errors = sum(1 for row in rows if row.get("failureReason") == 2)
    return len(rows), passed, errors


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def run(work: Path, api_url: str, questions: list[str], repeat: int, concurrency: int,
        timeout: float, model: str = "claude-sonnet-4-5") -> PromptfooRun:
    """Write promptfooconfig.yaml (and whatever else) under `work`, run
    `promptfoo eval -c ... --repeat R --no-cache -j C -o work/results.json` (plus flags that
    keep it quiet and offline: no telemetry, no update check, no sharing, no browser, its
    config/DB dir under `work`), with ANTHROPIC_BASE_URL=api_url and ANTHROPIC_API_KEY=bench-key
    in its environment, and return the figures. Never hangs past `timeout` (kill the process
    group)."""
    problem = missing()
    if problem is not None:
        raise RuntimeError(problem)
    node, _ = _node()
    assert node is not None
    work.mkdir(parents=True, exist_ok=True)
    (work / "promptfoo-home").mkdir(exist_ok=True)
    config_path = work / "promptfooconfig.yaml"
    config_path.write_text(json.dumps(config(questions, model), indent=2) + "\n",
                           encoding="utf-8")
    results_path = work / "results.json"
    results_path.unlink(missing_ok=True)
    log_path = work / "promptfoo.log"
    argv = [
        node, str(_ENTRYPOINT), "eval",
        "-c", str(config_path),
        "--repeat", str(repeat),
        "--no-cache",
        "-j", str(concurrency),
        "-o", str(results_path),
        "--no-share", "--no-table", "--no-progress-bar",
    ]
    with log_path.open("wb") as log:
        start = time.monotonic()
        proc = subprocess.Popen(
            argv, cwd=work, env=_env(work, api_url, node), stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = start + timeout
        # os.wait4 gives this process's own rusage (its reaped children included), unlike a
        # RUSAGE_CHILDREN delta, which other children of the caller would pollute.
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if time.monotonic() >= deadline:
                _kill_group(proc.pid, signal.SIGTERM)
                grace = time.monotonic() + 3.0
                while time.monotonic() < grace:
                    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                    if pid == proc.pid:
                        break
                    time.sleep(0.05)
                else:
                    _kill_group(proc.pid, signal.SIGKILL)
                    _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        wall = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        _kill_group(proc.pid, signal.SIGKILL)  # anything it left behind in its group
    results, passed, errors = _count(results_path)
    return PromptfooRun(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        returncode=proc.returncode,
        results=results,
        passed=passed,
        errors=errors,
        log_tail=_tail(log_path),
    )
