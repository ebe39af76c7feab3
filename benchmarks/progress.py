"""What the progress display costs: `wa-analytics charges` on generated traffic, its stderr a
pseudo-terminal, with the display and with --quiet, runs alternated.

    .venv/bin/python benchmarks/progress.py [--users 60000] [--months 3] [--runs 3]

Prints the wall and CPU seconds of each run (CPU: user + system of the process, which the load of
other processes on the machine disturbs less than the wall clock) and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import os
import pty
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CONSOLE_SCRIPT = Path(sys.executable).with_name("wa-analytics")


def on_terminal(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of `argv` run with stderr on a pseudo-terminal (drained meanwhile)."""
    master, slave = pty.openpty()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)

    def drain() -> None:
        try:
            while os.read(master, 65536):
                pass
        except OSError:
            pass

    reader = threading.Thread(target=drain)
    reader.start()
    if process.wait() != 0:
        raise SystemExit(f"{' '.join(argv)} failed")
    wall = time.perf_counter() - started
    reader.join()
    os.close(master)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=60_000)
    parser.add_argument("--months", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        traffic = Path(folder) / "traffic.csv"
        subprocess.run(
            [CONSOLE_SCRIPT, "generate", "--users", str(args.users), "--start", "2026-01-01", "--months", str(args.months), "-o", traffic],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        measured: dict[str, list[tuple[float, float]]] = {"display": [], "quiet": []}
        for _ in range(args.runs):
            for mode, extra in (("display", []), ("quiet", ["--quiet"])):
                argv = [str(CONSOLE_SCRIPT), "charges", *extra, str(traffic), "-o", str(Path(folder) / "charges.parquet")]
                measured[mode].append(on_terminal(argv))
    for mode, runs in measured.items():
        print(f"{mode:8} wall {' '.join(f'{w:6.2f}' for w, _ in runs)} s   cpu {' '.join(f'{c:6.2f}' for _, c in runs)} s")
    for i, what in enumerate(("wall", "cpu")):
        ratio = statistics.median(r[i] for r in measured["display"]) / statistics.median(r[i] for r in measured["quiet"])
        print(f"median {what} display/quiet: {ratio:.3f}")


if __name__ == "__main__":
    main()
