"""Entering a network namespace from this thread (setns), never creating one."""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Iterator
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = Path("/run/netns")  # `ip netns` names namespaces here
ETC_NETNS = Path("/etc/netns")  # ... and bind-mounts NAME/* over /etc for `ip netns exec`
_libc = ctypes.CDLL(None, use_errno=True)
_netns_lock = threading.Lock()


@contextlib.contextmanager
def inside_netns(name: str | None) -> Iterator[None]:
    """Run the block with this thread in network namespace ``name`` (no-op for None).

    Never creates a namespace: a missing one is an error, not a new namespace.
    """
    if name is None:
        yield
        return
    with _netns_lock:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(NETNS_RUN_DIR / name, os.O_RDONLY)
        except FileNotFoundError:
            os.close(own)
            raise RuntimeError(f"network namespace {name!r} does not exist") from None
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(target)
            os.close(own)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")
