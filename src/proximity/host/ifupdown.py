"""One policy for ifupdown2's machine-wide lock: retry while another run holds it, until a deadline.

ifupdown2 takes one lock for the whole machine (``/run/network``), even when each run is inside
its own network namespace, so a reload may find another one in progress. It then exits 89 at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

LOCKED_EXIT = 89  # "Another instance of this program is already running"


def is_locked(returncode: int | None, output: str = "") -> bool:
    """Did ifupdown2 give up because another instance holds its lock?"""
    return returncode == LOCKED_EXIT or "Another instance" in output


def retry_while_locked(attempt: Callable[[float], T], locked: Callable[[T], bool], timeout: float) -> T:
    """Call ``attempt(seconds_left)`` until ``locked(result)`` is false or ``timeout`` seconds pass.

    The waits grow from 50 ms to 0.5 s, so a short reload elsewhere costs little and a long one
    is not hammered; the last result is returned either way, for the caller to report.
    """
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        result = attempt(max(1.0, deadline - time.monotonic()))
        if not locked(result) or time.monotonic() + delay >= deadline:
            return result
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
