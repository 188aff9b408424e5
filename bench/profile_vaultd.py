"""Run the vaultd command line in this process under cProfile, in every thread.

    python -m bench.profile_vaultd OUT.prof REPORT.txt -- run VAULT --once

``cProfile`` alone sees only the main thread, and a ``--once`` run does its work in pool
threads; here each new thread starts a profiler of its own and all are merged at the end.
The report lists the top functions by own time and by cumulative time.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import resource
import sys
import threading
import time
from types import FrameType
from typing import Any


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    prof_path, report_path, vaultd_args = argv[0], argv[1], argv[3:]
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start_in_thread(frame: FrameType, event: str, arg: Any) -> None:
        profile = cProfile.Profile()
        with lock:
            profiles.append(profile)
        sys.setprofile(None)
        profile.enable()  # replaces this hook for the rest of the thread

    from vaultd import cli  # imported before profiling: import time is not the question

    threading.setprofile(start_in_thread)
    main_profile = cProfile.Profile()
    start = time.perf_counter()
    main_profile.enable()
    try:
        code = cli.main(vaultd_args)
    finally:
        main_profile.disable()
        threading.setprofile(None)
    wall = time.perf_counter() - start
    stats = pstats.Stats(main_profile)
    with lock:
        for profile in profiles:
            try:
                stats.add(profile)
            except TypeError:  # a thread that never ran a function
                continue
    stats.dump_stats(prof_path)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    buffer = io.StringIO()
    buffer.write(f"vaultd {' '.join(vaultd_args)}: exit {code}, {wall:.2f} s wall, "
                 f"{usage.ru_utime + usage.ru_stime:.2f} CPU-s in this process, "
                 f"{children.ru_utime + children.ru_stime:.2f} in reaped children; "
                 f"{len(profiles) + 1} threads profiled (the sums below add up every "
                 "thread's time, so they exceed the wall time)\n\n")
    report = pstats.Stats(prof_path, stream=buffer)
    report.strip_dirs().sort_stats("tottime").print_stats(35)
    report.sort_stats("cumulative").print_stats(45)
    with open(report_path, "w", encoding="utf-8") as handle:
        handle.write(buffer.getvalue())
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
