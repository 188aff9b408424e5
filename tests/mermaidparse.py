"""The real Mermaid parser, run under Node: ``tests/mermaid/parse.mjs``.

Its packages are installed by ``npm ci --prefix tests/mermaid`` (``.ci/run`` does it);
the tests install nothing. A machine without Node.js or without those packages fails
these tests, with the command that fixes it: a chart check that silently skips would
prove nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

MERMAID_DIR = Path(__file__).resolve().parent / "mermaid"
SCRIPT = MERMAID_DIR / "parse.mjs"


def parse_charts(charts: list[str]) -> tuple[int, list[dict[str, Any]]]:
    """Mermaid's verdict on each chart, and the script's exit code (0: all parsed)."""
    node = shutil.which("node")
    if node is None:
        raise AssertionError("Node.js is not installed: the Mermaid charts cannot be checked "
                             "(install Node.js 18 or newer, then npm ci --prefix tests/mermaid)")
    if not (MERMAID_DIR / "node_modules" / "mermaid").is_dir():
        raise AssertionError("the Mermaid parser is not installed: run "
                             "`npm ci --prefix tests/mermaid`")
    done = subprocess.run([node, str(SCRIPT)], input=json.dumps(charts), capture_output=True,
                          text=True, timeout=120, check=False, cwd=MERMAID_DIR)
    assert done.returncode in (0, 1), done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout)
    assert len(results) == len(charts)
    return done.returncode, results
