"""Running commands for the local LXC backend: inside the sandbox's network namespace, with timeouts.

LXC's command sockets are abstract unix sockets, which belong to a network namespace, so every
``lxc-*`` call runs in the namespace the container was started in (``netns``).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from proximity.containers.base import BackendError
from proximity.host import NETNS_RUN_DIR, CommandError, Host, Result

# Like `ip netns exec NS CMD`, but keeps the cgroup hierarchies. `ip netns exec` mounts the
# namespace's own sysfs on /sys in a private mount namespace, which hides /sys/fs/cgroup: LXC then
# runs the container without cgroups and fails on any lxc.cgroup* limit. A fresh sysfs of the
# network namespace is needed all the same (with the machine's sysfs, lxc-start fails: "Failed to
# attach veth to bridge prox-net, bridge interface doesn't exist": it looks in /sys/class/net).
# So: enter the network namespace (nsenter), make a private mount namespace (unshare, propagation
# slave: nothing reaches the machine's mounts), park /sys/fs/cgroup (an rbind in a temporary
# directory under lxcpath), mount the namespace's sysfs, and move the cgroup mounts back under it.
_NETNS_EXEC_SH = r"""
set -e
park=
if mountpoint -q /sys/fs/cgroup; then
    dir=$CT_PARK_DIR; [ -d "$dir" ] || dir=/tmp
    park=$(mktemp -d "$dir/.netns-exec.XXXXXX")
    mount --rbind /sys/fs/cgroup "$park"
fi
umount -l /sys
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
if [ -n "$park" ]; then
    mount --move "$park" /sys/fs/cgroup
    rmdir "$park"
fi
exec "$@"
"""


def start_errors(logfile: Path, offset: int) -> str:
    """The ERROR lines lxc-start logged from ``offset`` on, without its generic advice."""
    try:
        with logfile.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    found = []
    for line in text.splitlines():
        if " ERROR " in line and "lxc_start.c:main" not in line:
            found.append(line.split(" - ", 2)[-1].strip())
    return " | ".join(found[:4])


class LxcCommands:
    """Commands in network namespace ``netns`` (None: this machine's) for containers under ``lxcpath``.

    A base of :class:`~proximity.containers.lxc.LxcBackend`, which sets the three attributes.
    """

    netns: str | None
    lxcpath: Path
    command_timeout: float

    @property
    def _where(self) -> str:
        return f"network namespace {self.netns}" if self.netns else "this machine's network namespace"

    def _in_ns(self, argv: list[str]) -> list[str]:
        if self.netns is None:
            return argv
        if not (NETNS_RUN_DIR / self.netns).exists():
            raise BackendError(
                f"network namespace {self.netns} does not exist: create the sandbox first "
                f"('proximity sandbox create {self.netns}')"
            )
        return ["env", f"CT_PARK_DIR={self.lxcpath}", "nsenter", f"--net={NETNS_RUN_DIR / self.netns}",
                "unshare", "--mount", "--propagation", "slave", "sh", "-c", _NETNS_EXEC_SH, "ct-netns-exec", *argv]

    def _run(self, argv: list[str], *, timeout: float | None = None, check: bool = True,
             in_ns: bool = True, fix: str = "") -> Result:
        """Run ``argv`` (inside ``netns`` when ``in_ns``) with a timeout; BackendError with argv and stderr."""
        cmd = self._in_ns(argv) if in_ns else argv
        timeout = self.command_timeout if timeout is None else timeout
        try:
            proc = Host().run(cmd, timeout=timeout, check=False)
        except CommandError as exc:
            if exc.timed_out:
                raise BackendError(f"'{shlex.join(argv)}' in {self._where} timed out after {timeout:g} s"
                                   + (f"; {fix}" if fix else "")) from None
            if exc.returncode != 127:
                raise BackendError(f"cannot run '{shlex.join(argv)}': {exc.stderr}") from None
            tool = cmd[0]
            hint = "install the Debian package lxc ('apt-get install lxc')" if tool.startswith("lxc-") else \
                f"install {tool}"
            raise BackendError(f"cannot run '{shlex.join(argv)}': {tool} is not installed; {hint}") from None
        if check and proc.returncode != 0:
            detail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:]) or "no output"
            raise BackendError(f"'{shlex.join(argv)}' failed in {self._where} (exit {proc.returncode}): {detail}"
                               + (f"; {fix}" if fix else ""))
        return proc

    def _lxc(self, tool: str, vmid: int, *args: str, **kwargs: Any) -> Result:
        return self._run([tool, "-P", str(self.lxcpath), "-n", str(vmid), *args], **kwargs)

    def _state(self, vmid: int) -> str:
        """LXC's state (RUNNING, STOPPED, STARTING, ...), asked in the container's namespace."""
        proc = self._lxc("lxc-info", vmid, "-s", "-H", timeout=10)
        return proc.stdout.strip().upper() or "STOPPED"

    def _running(self, vmid: int) -> bool:
        return self._state(vmid) != "STOPPED"

    def _running_ids(self) -> set[int]:
        """The containers under ``lxcpath`` whose LXC state is not STOPPED, in one ``lxc-ls`` (its
        ``--running`` asks each container's state as ``lxc-info -s`` does, in this one process)."""
        proc = self._run(["lxc-ls", "-P", str(self.lxcpath), "-1", "--running"])
        return {int(name) for name in proc.stdout.split() if name.isdigit()}
