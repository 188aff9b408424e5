"""The command line and the daemon under hostile input and a hostile environment: YAML
alias bombs, output nobody reads, a vault folder swapped under the daemon, a killed
``--once`` run's children, a ``.vaultd`` that is a file, and YAML 1.1's booleans."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, Ran, run_process
from .daemonproc import DaemonProcess, note_says, wait_for
from .fakeapi import FakeMessagesAPI, Reply
from .notes import note_with_measures, programmatic_note

DONE = "Status: Done"
MEMORY_BOUND = 1536 * 1024 * 1024  # bytes of address space the bomb's process may use
LEVELS = "abcdefghi"
# 9 levels of 9 aliases each: about 300 bytes that stand for 9**9 (387 million) values
X9 = ", ".join(['"x"'] * 9)
BOMB = "[" + ", ".join(
    [f"&a [{X9}]"]
    + [f"&{name} [{', '.join([f'*{LEVELS[i]}'] * 9)}]" for i, name in enumerate(LEVELS[1:])]
) + "]"


def _limited() -> None:
    """In the child, before it runs: at most MEMORY_BOUND of address space."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BOUND, MEMORY_BOUND))


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_limited(*args: str, timeout: float = 120) -> Ran:
    """``python -m vaultd ARGS`` as a real process whose memory is bounded."""
    done = subprocess.run([sys.executable, "-m", "vaultd", *args], capture_output=True,
                          text=True, env=_env(), timeout=timeout, stdin=subprocess.DEVNULL,
                          preexec_fn=_limited, check=False)
    return Ran(done.returncode, done.stdout, done.stderr)


# what setrlimit does to the daemon's command: the same limit, then exec
LIMIT_PREFIX = [sys.executable, "-c",
                "import os, resource, sys; "
                f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_BOUND}, {MEMORY_BOUND})); "
                "os.execv(sys.argv[1], sys.argv[1:])"]


def bomb_notes(vault: Path) -> dict[str, tuple[Path, int, str]]:
    """Notes with the bomb in a property, a measures-md field and a measures-yaml block:
    name -> (path, line of the bomb, what the error says on it)."""
    made: dict[str, tuple[Path, int, str]] = {}
    for key in ("max_tokens", "model", "cache"):
        path = vault / f"bomb {key}.md"
        path.write_text(programmatic_note().replace(
            "Status: Pending\n", f"Status: Pending\n{key}: {BOMB}\n", 1), encoding="utf-8")
        made[key] = (path, 3, f"property `{key}`")
    md = vault / "bomb field.md"
    md.write_text(note_with_measures(["* ---", "  * id: size", "  * type: programmatic",
                                      f"  * params: {BOMB}",
                                      "  * logic: 'return input.length;'"]),
                  encoding="utf-8")
    made["field"] = (md, 15, "field `params`")
    yml = vault / "bomb yaml.md"
    yml.write_text(
        "---\nStatus: Pending\n---\n\n> [!answer]\n> ```answer-text\n> Poteligeo.\n> ```\n\n"
        "> [!measures]\n> ```measures-yaml\n> - id: size\n>   type: programmatic\n"
        f">   params: {BOMB}\n>   logic: 'return input.length;'\n> ```\n", encoding="utf-8")
    made["yaml"] = (yml, 14, "the measures are not valid YAML")
    return made


ALIASES = "its aliases stand for more than 10,000 values"


def test_a_yaml_alias_bomb_is_refused_on_its_line_in_check_once_and_the_daemon(
        vault: Path) -> None:
    assert len(BOMB) < 400
    bombs = bomb_notes(vault)
    checked = run_limited("check", str(vault))
    assert checked.code == 1, checked
    assert "Traceback" not in checked.err and "MemoryError" not in checked.err, checked.err
    for name, (path, line, says) in bombs.items():
        assert f"{path}:{line}: {says}" in checked.out and ALIASES in checked.out, (name, checked)
    marker = vault / "marker.md"
    marker.write_text(programmatic_note(), encoding="utf-8")
    ran = run_limited("run", str(vault), "--once")
    assert ran.code == 1 and "Traceback" not in ran.err, ran
    assert note_says(marker, DONE)(), marker.read_text(encoding="utf-8")
    for name, (path, _, _) in bombs.items():
        text = path.read_text(encoding="utf-8")
        assert "Status: Error" in text and ALIASES in text and BOMB in text, (name, text)
    for path, _, _ in bombs.values():  # and again, with the daemon
        path.write_text(path.read_text(encoding="utf-8").replace("Status: Error", "Status: "
                                                                  "Pending", 1),
                        encoding="utf-8")
    with DaemonProcess(vault, "--settle", "0.1", prefix=LIMIT_PREFIX) as proc:
        proc.wait_ready()
        later = vault / "marker after.md"
        later.write_text(programmatic_note(), encoding="utf-8")
        wait_for(note_says(later, DONE), what="the marker after the bombs done")
        for path, _, _ in bombs.values():
            wait_for(note_says(path, "Status: Error", ALIASES), what=f"{path.name} refused")
        assert proc.stop() == 0, proc.log()
        assert "Traceback" not in proc.log() and "MemoryError" not in proc.log(), proc.log()


def first_line_then_close(*args: str, tmp_path: Path, env: dict[str, str] | None = None
                          ) -> tuple[int, str, str]:
    """``vaultd ARGS | head -1``: a real pipe whose reader closes after one line. Returns
    the exit code, the line and what the command wrote on stderr."""
    errors = tmp_path / "stderr.txt"
    with errors.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "vaultd", *args], env=_env(env),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode("utf-8", "replace")
        proc.stdout.close()  # the reader goes away
        code = proc.wait(120)
    return code, line, errors.read_text(encoding="utf-8", errors="replace")


def test_check_whose_reader_goes_away_prints_no_traceback(vault: Path, tmp_path: Path) -> None:
    for number in range(400):  # far more output than a pipe holds
        (vault / f"bad {number:03} with a long name, so that there is a lot to say.md"
         ).write_text(programmatic_note().replace("type: programmatic", "type: programatic"),
                      encoding="utf-8")
    code, line, err = first_line_then_close("check", str(vault), tmp_path=tmp_path)
    assert "unknown type `programatic`" in line, line
    assert code == 1 and err == "", (code, err)


def test_a_once_run_whose_reader_goes_away_processes_every_note(
        vault: Path, tmp_path: Path) -> None:
    notes = [vault / f"note {number:02}.md" for number in range(40)]
    for path in notes:
        path.write_text(programmatic_note(), encoding="utf-8")
    code, line, err = first_line_then_close("run", str(vault), "--once", tmp_path=tmp_path,
                                            env={"ANTHROPIC_API_KEY": "unused"})
    assert line.startswith("done "), line
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert code == 0, err
    for path in notes:
        assert note_says(path, DONE, "> 23\n> ```")(), path.read_text(encoding="utf-8")
    # and a run with a note in error still says so by its exit code
    notes[0].write_text(programmatic_note(logic="throw new Error('no');"), encoding="utf-8")
    notes[1].write_text(programmatic_note(), encoding="utf-8")
    code, _, err = first_line_then_close("run", str(vault), "--once", tmp_path=tmp_path,
                                         env={"ANTHROPIC_API_KEY": "unused"})
    assert code == 1 and "Traceback" not in err, err
    assert note_says(notes[1], DONE)()


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(pid: int) -> set[int]:
    """Every live process under ``pid`` (Linux ``/proc``)."""
    parents = {int(p.name): _parent_of(int(p.name)) for p in Path("/proc").iterdir()
               if p.name.isdigit()}
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie nobody reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def count_done(notes: list[Path]) -> int:
    return sum(1 for path in notes if note_says(path, DONE)())


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_once_run_leaves_no_process_writing_notes(vault: Path, sig: int) -> None:
    notes = [vault / f"note {number:03}.md" for number in range(240)]
    for number, path in enumerate(notes):  # each its own answer: dealt to both processes
        path.write_text(programmatic_note(answer=f"Answer {number}: Poteligeo."),
                        encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaultd", "run", str(vault), "--once", "--processes", "2"],
        env=_env({"ANTHROPIC_API_KEY": "unused"}), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        children: set[int] = set()
        first = proc.stdout.readline().decode()  # a child reported its first note
        assert first.startswith("done "), first
        children = descendants(proc.pid)
        assert len([p for p in children if _parent_of(p) == proc.pid]) == 2, children
        proc.send_signal(sig)
        proc.wait(60)
        done_at_kill = count_done(notes)
        wait_for(lambda: not any(alive(pid) for pid in children),
                 what="every process of the killed run gone")
        done_after = count_done(notes)
    finally:
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.stdout.close()
    # what was in hand when the parent died may finish; the rest waits for the next run
    assert done_after < len(notes) // 2, (done_at_kill, done_after)
    assert done_after - done_at_kill <= 32, (done_at_kill, done_after)
    ran = subprocess.run([sys.executable, "-m", "vaultd", "run", str(vault), "--once"],
                         env=_env({"ANTHROPIC_API_KEY": "unused"}), capture_output=True,
                         text=True, timeout=300, check=False)
    assert ran.returncode == 0, ran.stderr
    assert count_done(notes) == len(notes)


@pytest.mark.parametrize("how", ["deleted and made again", "swapped"])
def test_a_daemon_whose_vault_folder_is_replaced_says_so_and_exits_to_be_restarted(
        vault: Path, tmp_path: Path, how: str) -> None:
    first = vault / "first.md"
    first.write_text(programmatic_note(), encoding="utf-8")
    with DaemonProcess(vault, "--settle", "0.1") as proc:
        proc.wait_ready()
        wait_for(note_says(first, DONE), what="the first note done")
        if how == "swapped":
            other = tmp_path / "other vault"
            other.mkdir()
            vault.rename(tmp_path / "old vault")
            other.rename(vault)
        else:
            shutil.rmtree(vault)
            vault.mkdir()
        pending = vault / "pending.md"
        pending.write_text(programmatic_note(), encoding="utf-8")
        code = proc.proc.wait(60)
        log = proc.log()
    assert code == 1, log
    assert f"{vault}: the vault folder was replaced by another folder" in log, log
    assert "Traceback" not in log, log
    assert not (vault / ".vaultd" / "daemon.json").exists()  # nothing of the old run in it
    # as systemd does (Restart=on-failure): started again, it runs the note there now
    with DaemonProcess(vault, "--settle", "0.1") as again:
        again.wait_ready()
        wait_for(note_says(pending, DONE, "> 23\n> ```"), what="the new folder's note done")
        assert again.stop() == 0


def test_a_daemon_whose_vault_folder_is_deleted_says_so_and_exits(vault: Path) -> None:
    with DaemonProcess(vault, "--settle", "0.1") as proc:
        proc.wait_ready()
        # the daemon may make and remove its state file's temporary copy meanwhile
        wait_for(lambda: shutil.rmtree(vault, ignore_errors=True) or not vault.exists(),
                 what="the vault folder deleted")
        code = proc.proc.wait(60)
        log = proc.log()
    assert code == 1 and f"{vault}: the vault folder was deleted or moved away" in log, log


YAML11_NOT_TEXT = ["y", "Y", "n", "N", "yes", "Yes", "YES", "no", "No", "NO", "on", "On",
                   "ON", "off", "Off", "OFF", "true", "False", "~", "null", "Null", "0o17",
                   "1_000", ".inf", "-.Inf", ".NaN", "1:20", "190:20:30.15", "0b101", "0x_1F",
                   "017", "1.2.3", "="]


def test_text_yaml_1_1_reads_as_something_else_is_written_quoted(vault: Path) -> None:
    lines: list[str] = []
    for number, text in enumerate(YAML11_NOT_TEXT):
        lines += ["* ---", f"  * id: m{number}", "  * type: programmatic",
                  f"  * logic: 'return \"{text}\";'"]
    lines += ["* ---", "  * id: plain", "  * type: programmatic", "  * logic: 'return \"N/A\";'"]
    note = vault / "quoted.md"
    note.write_text(note_with_measures(lines), encoding="utf-8")
    ran = run_process("run", str(vault), "--once", env={"ANTHROPIC_API_KEY": "unused"})
    assert ran.code == 0, ran
    text = note.read_text(encoding="utf-8")
    for number, value in enumerate(YAML11_NOT_TEXT):
        assert f'\neval_m{number}: "{value}"\n' in text, (value, text[:2000])
    assert "\neval_plain: N/A\n" in text


@pytest.mark.parametrize("command", [
    ["run", "{vault}", "--once"], ["run", "{vault}"], ["check", "{vault}"],
    ["check", "{note}"], ["status", "{vault}"], ["init", "{vault}"], ["report", "{vault}"],
    ["service", "install", "{vault}", "--no-start", "--unit-dir", "{units}"],
], ids=lambda command: " ".join(command[:2]).replace("{vault}", "").strip())
def test_a_vaultd_file_is_named_as_a_file_where_a_folder_is_needed(
        vault: Path, tmp_path: Path, command: list[str]) -> None:
    (vault / ".vaultd").write_text("not a folder\n", encoding="utf-8")
    note = vault / "note.md"
    note.write_text(programmatic_note(), encoding="utf-8")
    before = sorted(p.relative_to(vault) for p in vault.rglob("*"))
    args = [part.format(vault=vault, note=note, units=tmp_path / "units") for part in command]
    ran = run_process(*args, env={"ANTHROPIC_API_KEY": "unused"}, timeout=60)
    assert ran.code == 2, ran
    assert ran.err == (f"vaultd: {vault}/.vaultd is a file, where vaultd needs a folder (for "
                       "its config.toml, journal and cache): move it away or rename it\n"), ran
    assert "Not a directory" not in ran.out + ran.err
    assert note.read_text(encoding="utf-8") == programmatic_note()
    assert sorted(p.relative_to(vault) for p in vault.rglob("*")) == before
    assert not (tmp_path / "units").exists()


def test_the_base_has_no_column_that_could_never_fill(vault: Path) -> None:
    def measure(measure_id: str, logic: str) -> list[str]:
        return ["* ---", f"  * id: {measure_id}", "  * type: programmatic",
                f"  * logic: '{logic}'"]
    lines = (measure("size", "return input.length;") + measure("object", "return {a: 1};")
             + measure("nothing", "return null;")
             + measure("fails", "throw new Error(\"never\");")
             + measure("sometimes", "return input.length > 30 ? {a: 1} : \"short\";"))
    for number, answer in enumerate(["Poteligeo is an option.", "Poteligeo is an option, "
                                     "and a long one at that."]):
        (vault / f"note {number}.md").write_text(note_with_measures(lines, answer=answer),
                                                 encoding="utf-8")
    run_process("run", str(vault), "--once", env={"ANTHROPIC_API_KEY": "unused"})
    ran = run_process("report", str(vault))
    assert ran.code == 0, ran
    base = (vault / "vaultd.base").read_text(encoding="utf-8")
    for filled in ("size", "sometimes"):
        assert f"- note.eval_{filled}\n" in base and f"displayName: {filled}" in base, base
    for never in ("object", "nothing", "fails"):
        assert f"eval_{never}" not in base and never not in base, base


def test_the_log_says_how_a_note_ended_in_plain_words_once(
        vault: Path, api: FakeMessagesAPI) -> None:
    api.rule("SLOW", Reply(text='"late"', delay=1.5))
    note = vault / "n.md"
    note.write_text(note_with_measures(["* ---", "  * id: slow", "  * type: ai",
                                        "  * prompt: SLOW"]), encoding="utf-8")
    flashcard = vault / "card.md"  # an answer callout without its block: the user's, said well
    flashcard.write_text(note_with_measures(["* ---", "  * id: size", "  * type: programmatic",
                                             "  * logic: 'return 1;'"]).replace(
        "> ```answer-text\n> The answer mentions Poteligeo.\n> ```\n", "> Reveal.\n"),
        encoding="utf-8")
    with DaemonProcess(vault, "--settle", "0.1") as proc:
        proc.wait_ready()
        assert api.wait_for_requests(1, timeout=60)  # it runs
        note.write_text(note.read_text(encoding="utf-8").replace("Status: Processing",
                                                                  "Status: Draft", 1),
                        encoding="utf-8")
        said = "n.md: its Status was changed while it ran; left as it is"
        wait_for(lambda: said in proc.log(), what=said)
        assert proc.stop() == 0
        log = proc.log()
    assert "left_alone" not in log and "left as it is" not in log.replace(said, ""), log
    assert log.count(said) == 1, log
    checked = run_process("check", str(flashcard))
    assert "card.md: not a vaultd note: " in checked.out, checked
    assert "its `[!answer]` callout holds no `answer-text` block" in checked.out, checked
