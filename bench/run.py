"""Benchmarks, run with `make bench`: each line has its baseline measured in the same run.

no-op `proximity up` (whole process, converged host) against a plain `ifreload -a`
on the same sandbox host: what re-running Proximity costs compared with the
reload every Proxmox network change already pays.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

from proximity import sandbox as sandboxes

sys.path.insert(0, os.path.dirname(__file__))
import api  # noqa: E402  (bench/api.py)
import containers  # noqa: E402  (bench/containers.py)

RUNS = int(os.environ.get("BENCH_RUNS", "5"))


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def measure(argv: list[str]) -> list[float]:
    timed(argv)  # warm the page cache once
    return [timed(argv) for _ in range(RUNS)]


def main() -> None:
    name = f"bench{os.getpid() % 10000}"
    sandboxes.destroy(name)
    sandboxes.create(name)
    try:
        proximity = [sys.executable, "-m", "proximity"]
        subprocess.run([*proximity, "up", "--sandbox", name], check=True, capture_output=True)
        rows = [
            ("no-op `proximity up` (whole process)", measure([*proximity, "up", "--sandbox", name, "--json"])),
            ("`proximity status --json`", measure([*proximity, "status", "--sandbox", name, "--json"])),
            ("baseline: `ifreload -a` alone", measure(["ip", "netns", "exec", name, "ifreload", "-a"])),
        ]
    finally:
        sandboxes.destroy(name)
    table = Table(title=f"Proximity benchmarks ({RUNS} runs each, seconds)")
    for column in ("what", "median", "min", "max"):
        table.add_column(column)
    for label, samples in rows:
        table.add_row(label, *(f"{value:.3f}" for value in (statistics.median(samples), min(samples), max(samples))))
    Console().print(table)

    count = int(os.environ.get("BENCH_CONTAINERS", "20"))
    ready = Table(title=f"Network-ready time of {count} containers (seconds from the start call)")
    for column in ("what", "median", "p95", "max"):
        ready.add_column(column)
    for label, samples in containers.run(count):
        median, p95 = containers.summary(samples)
        ready.add_row(label, f"{median:.3f}", f"{p95:.3f}", f"{max(samples):.3f}")
    Console().print(ready)

    Console().print(api.table(api.run()))  # status endpoint: 50 concurrent clients, snapshot vs naive


if __name__ == "__main__":
    main()
