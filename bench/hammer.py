"""The hammer: an editor saves a note in a loop while vaultd's writer writes it, and readers read.

    python -m bench.hammer [--seconds 20] [--readers 2] [--pause S] [--save truncate|rename]
                           [--no-lease] [--src CHECKOUT] [--dir FOLDER]

Three kinds of real processes share one note:

- the **editor** saves the note as an editor would: it reads it (as Obsidian reloads a note
  that changed on disk), puts its own line ``save: N`` in it, and writes the whole text back
  with ``open(O_TRUNC)`` + ``write`` (``--save truncate``, Obsidian's way) or a temporary
  file renamed over the note (``--save rename``). Before each save it reads the note again
  and checks that its previous save is in it: if a clean read lacks it, a write of vaultd's
  made from an older text replaced it, and the save is **lost**.
- **vaultd** reads the note and writes its own line ``result: K`` (of a varying length, so
  that every second write shrinks the note) through the real :class:`vaultd.edges.writer.Writer`,
  compare-and-write; a conflict is read again, as the engine does.
- **readers** read the note in a loop. Every text ends with one ``<!-- end -->`` line: a
  read where it is followed by more text (or comes twice) is **torn**: the new start of a
  write of vaultd's followed by the old tail. A read without it is the editor mid-save
  (``O_TRUNC``, then the text), counted apart as ``partial``: no writer of vaultd's can
  prevent that one.
- when a clean read does not come for a second, an editor's save and a write of vaultd's
  interleaved and left a note that is neither (``corrupt``); the editor saves over it.

``--no-lease`` makes the writer write without a lease, as it does where none can be had;
``--src`` runs another checkout's writer (e.g. one made with ``git archive`` of an older
commit). Prints one line of counts.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

END = b"<!-- end -->\n"


def text(save: int, result: int) -> bytes:
    pad = "r" * (result * 37 % 600)  # every other write of vaultd's makes the note shorter
    body = "".join(f"- line {i} of the user's note, as it was typed\n" for i in range(40))
    return (f"---\nStatus: Processing\nresult: {result} {pad}\n---\nsave: {save}\n"
            f"{body}").encode() + END


def state(data: bytes) -> str:
    """clean, partial (no end line: the editor mid-save) or torn (more after the end)."""
    at = data.find(END)
    if at < 0:
        return "partial"
    return "clean" if at + len(END) == len(data) else "torn"


def field(data: bytes, name: bytes) -> int:
    start = data.index(b"\n" + name + b": ") + len(name) + 3
    end = start
    while data[end:end + 1].isdigit():
        end += 1
    return int(data[start:end])


def read(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def clean_read(path: Path) -> bytes | None:
    """A clean read, or None when the note stays torn for a second: two writes interleaved
    (an editor's ``O_TRUNC`` save inside one of vaultd's in-place writes) left neither."""
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline:
        data = read(path)
        if state(data) == "clean":
            return data
    return None


def editor(path: Path, mode: str, stop: Any, out: Any) -> None:
    saves = lost = corrupt = 0
    last = -1
    rng = random.Random(1)
    while not stop.is_set():
        current = clean_read(path)
        if current is None:
            corrupt += 1
            current = text(last, 0)  # the editor saves its own text over the wreck
        elif last >= 0 and field(current, b"save") != last:
            lost += 1
        last += 1
        new = text(last, field(current, b"result"))
        if mode == "truncate":
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, new)
            finally:
                os.close(fd)
        else:
            tmp = path.with_name(".hammer.tmp")
            tmp.write_bytes(new)
            os.replace(tmp, path)
        saves += 1
        if rng.random() < 0.5:
            time.sleep(rng.random() / 2000)
    out.put(("editor", {"saves": saves, "lost": lost, "corrupt": corrupt}))


def vaultd(src: str | None, path: Path, leases: bool, stop: Any, out: Any) -> None:
    if src:
        sys.path.insert(0, src)
    from vaultd.edges.writer import Writer
    from vaultd.errors import WriteConflict

    try:
        writer = Writer(path.parent, leases=leases)  # type: ignore[call-arg]
    except TypeError:  # a writer from before leases
        writer = Writer(path.parent)
    writes = conflicts = 0
    while not stop.is_set():
        data = read(path)
        if state(data) != "clean":
            continue
        new = text(field(data, b"save"), field(data, b"result") + 1)
        try:
            writer.write(path, data, new)
            writes += 1
        except WriteConflict:
            conflicts += 1
    writer.close()
    out.put(("vaultd", {"writes": writes, "conflicts": conflicts,
                        "unleased": getattr(writer, "unleased", writes + conflicts),
                        "leases": int(getattr(writer, "leases", False))}))


def reader(path: Path, pause: float, stop: Any, out: Any) -> None:
    counts = {"reads": 0, "torn": 0, "partial": 0}
    while not stop.is_set():
        kind = state(read(path))
        counts["reads"] += 1
        if kind != "clean":
            counts[kind] += 1
        if pause:
            time.sleep(pause)
    out.put(("reader", counts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hammer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--save", choices=("truncate", "rename"), default="truncate")
    parser.add_argument("--pause", type=float, default=0.0,
                        help="seconds each reader waits between reads (default: none)")
    parser.add_argument("--no-lease", action="store_true")
    parser.add_argument("--src", help="a vaultd checkout to take the writer from")
    parser.add_argument("--dir", type=Path, help="make the vault in this folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="hammer-") as tmp:
        path = Path(tmp) / "note.md"
        path.write_bytes(text(-1, 0))
        ctx = mp.get_context("fork")
        stop, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=editor, args=(path, args.save, stop, out)),
                 ctx.Process(target=vaultd, args=(args.src, path, not args.no_lease, stop, out)),
                 *(ctx.Process(target=reader, args=(path, args.pause, stop, out))
                   for _ in range(args.readers))]
        for proc in procs:
            proc.start()
        time.sleep(args.seconds)
        stop.set()
        totals: dict[str, int] = {}
        for _ in procs:
            _, counts = out.get(timeout=60)
            for key, value in counts.items():
                totals[key] = totals.get(key, 0) + value
        for proc in procs:
            proc.join(timeout=60)
    print(json.dumps({"save": args.save, "lease": bool(totals.pop("leases", 0)),
                      "src": args.src or "this checkout", "seconds": args.seconds,
                      "readers": args.readers, "pause": args.pause, **totals}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
