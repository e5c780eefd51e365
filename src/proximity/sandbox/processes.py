"""The sandbox's processes: found by pid file or by network namespace, stopped by pid.

Only a process the sandbox can prove it started is ever signalled: one named by a pid file
under the sandbox's run_dir that names that file on its command line or runs in one of the
sandbox's namespaces, or any process inside one of those namespaces.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from proximity.host import NETNS_RUN_DIR, Host, pid_cmdline

NsId = tuple[int, int]  # (st_dev, st_ino) of a network namespace


def ns_id(path: str | Path) -> NsId | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def ns_ids(namespaces: Iterable[str]) -> set[NsId]:
    """The ids of those named namespaces that exist."""
    return {i for i in (ns_id(NETNS_RUN_DIR / ns) for ns in namespaces) if i}


def pids_in_ns(ids: set[NsId]) -> set[int]:
    """Pids whose network namespace is one of ``ids`` (what ``ip netns pids`` does)."""
    if not ids:
        return set()
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and ns_id(entry / "ns/net") in ids:
            pids.add(int(entry.name))
    pids.discard(os.getpid())
    return pids


def read_pidfile(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 1 else None


def _pid_matches(pid: int, pidfile: Path, ids: set[NsId]) -> bool:
    """The process is the one that wrote ``pidfile`` (named on its command line) or runs in
    one of the sandbox's namespaces -- never some unrelated process that reused the pid."""
    cmdline = pid_cmdline(pid)
    if cmdline is None:
        return False
    if any(str(pidfile) in arg for arg in cmdline):
        return True
    return ns_id(f"/proc/{pid}/ns/net") in ids


def stop_all(run_dir: Path, namespaces: Iterable[str]) -> list[int]:
    """Stop the processes of ``run_dir``'s pid files and every process in ``namespaces``.

    Returns the pids that survived SIGKILL.
    """
    ids = ns_ids(namespaces)
    host = Host()
    survivors: list[int] = []
    # Looked for again after each round: a process being stopped may start another meanwhile (the
    # service heals the dnsmasq it just saw die, until the service itself is gone).
    for _round in range(5):
        pids = {pid for pidfile in sorted(run_dir.glob("*.pid")) if (pid := read_pidfile(pidfile)) is not None
                and host.alive(pid) and _pid_matches(pid, pidfile, ids)} | pids_in_ns(ids)
        if not pids:
            break
        survivors = host.terminate(pids)
    return survivors
