"""The one retry policy for ifupdown2's machine-wide lock (both the reconciler and the sandbox use it)."""

import time

from proximity.host.ifupdown import is_locked, retry_while_locked


def test_retries_while_locked_then_returns_the_first_unlocked_result():
    results = iter([89, 89, 0])
    calls = []

    def attempt(seconds_left: float) -> int:
        calls.append(seconds_left)
        return next(results)

    assert retry_while_locked(attempt, lambda rc: is_locked(rc), timeout=10) == 0
    assert len(calls) == 3 and all(0 < left <= 10 for left in calls)


def test_a_failure_that_is_not_the_lock_is_returned_at_once():
    calls = []
    assert retry_while_locked(lambda left: calls.append(left) or 1, lambda rc: is_locked(rc), timeout=10) == 1
    assert len(calls) == 1


def test_gives_up_at_the_deadline_with_the_last_result():
    start = time.monotonic()
    assert retry_while_locked(lambda left: 89, lambda rc: is_locked(rc), timeout=0.5) == 89
    assert time.monotonic() - start < 2


def test_the_lock_is_recognised_by_its_message_too():
    assert is_locked(1, "error: Another instance of this program is already running.")
    assert not is_locked(1, "error: bridge prox-net: invalid address")
