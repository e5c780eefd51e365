"""Which process owns an unfinished operation, so that a crashed one can be told from a running one.

A pid alone is not enough: after a crash the kernel may give it to another process. The pid
together with the process's start time (field 22 of ``/proc/PID/stat``, in clock ticks after
boot) names one process for as long as the machine runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Owner:
    pid: int
    start: int  # the process's start time, in clock ticks after boot

    @classmethod
    def me(cls) -> Owner:
        pid = os.getpid()
        start = start_time(pid)
        assert start is not None  # our own /proc entry exists
        return cls(pid, start)

    def alive(self) -> bool:
        return start_time(self.pid) == self.start


def start_time(pid: int) -> int | None:
    """The start time of process ``pid``, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')': split after the last ')'.
    fields = stat[stat.rfind(b")") + 2:].split()
    return int(fields[19])  # field 22 of the whole line
