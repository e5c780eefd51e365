"""Commands and netlink inside the sandbox's namespaces, always through :class:`proximity.host.Host`.

Every ``ip`` call is ``ip -n NS ...`` and every other command ``ip netns exec NS ...``: nothing here
acts on the machine's own network namespace except adding and deleting named namespaces.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from proximity.host import CommandError, Host, Result
from proximity.sandbox.layout import SandboxError, check_ns_name, ns_exists


def run(host: Host, argv: list[str], timeout: float = 10, check: bool = True) -> Result:
    """``argv`` on ``host``; SandboxError names the command, its namespace and its output.

    A timeout or a missing program always raises, even without ``check``.
    """
    try:
        return host.run(argv, timeout=timeout, check=check)
    except CommandError as exc:
        raise _sandbox_error(exc, timeout) from None


def ns_run(ns: str, argv: list[str], timeout: float = 10, check: bool = True) -> Result:
    """Run ``ip netns exec ns argv...`` (text, captured); SandboxError on failure if ``check``.

    A timeout always raises SandboxError (the command is killed).
    """
    check_ns_name(ns)
    return run(Host(ns), argv, timeout, check)


def ip(ns: str, *args: str, timeout: float = 10) -> Result:
    """``ip -n NS ...``: always inside a named namespace, never the machine's own."""
    check_ns_name(ns)
    try:
        return Host(ns).ip(*args, timeout=timeout)
    except CommandError as exc:
        raise _sandbox_error(exc, timeout) from None


def add_ns(ns: str) -> None:
    check_ns_name(ns)
    run(Host(), ["ip", "netns", "add", ns])
    ip(ns, "link", "set", "lo", "up")


def delete_ns(ns: str) -> None:
    check_ns_name(ns)
    run(Host(), ["ip", "netns", "delete", ns])


@contextmanager
def netlink(ns: str) -> Iterator[Any]:
    """A netlink socket inside ``ns`` (never creates the namespace)."""
    check_ns_name(ns)
    if not ns_exists(ns):
        raise SandboxError(f"network namespace {ns} does not exist")
    ipr = Host(ns).iproute()
    try:
        yield ipr
    finally:
        ipr.close()


def _sandbox_error(exc: CommandError, timeout: float) -> SandboxError:
    if exc.timed_out:
        return SandboxError(f"{exc} after {timeout:g}s (it was killed)")
    if exc.returncode == 127 and exc.stderr.endswith("command not found"):  # only `ip` runs directly
        return SandboxError(f"{exc}; is iproute2 installed?")
    return SandboxError(str(exc))
