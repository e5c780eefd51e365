"""The status snapshot's event sources, each a file descriptor to poll: rtnetlink (links, IPv4
addresses and routes, on a socket made in the host's namespace) and inotify (Proximity's files),
through libc: no dependency, no process forked."""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import socket
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from proximity.host import inside_netns

if TYPE_CHECKING:
    from pyroute2 import IPRoute

# rtnetlink multicast groups: link changes, IPv4 addresses, IPv4 routes (the default route = uplink)
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE = 0x1, 0x10, 0x40

# inotify(7)
IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_Q_OVERFLOW, IN_IGNORED = 0x400, 0x800, 0x4000, 0x8000
IN_ONLYDIR = 0x01000000
WATCH_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
              | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
_EVENT = struct.Struct("iIII")
_libc = ctypes.CDLL(None, use_errno=True)


def iproute_in(netns: str | None) -> IPRoute:
    """An IPRoute on a netlink socket made in ``netns`` (or this namespace for None).

    Unlike ``IPRoute(netns=...)`` this forks no helper process and never creates the namespace:
    the socket is opened with this thread briefly in the namespace (a socket keeps the namespace
    it was made in).
    """
    from pyroute2 import IPRoute  # slow to import: only when used

    with inside_netns(netns):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    try:
        return IPRoute(use_socket=sock)
    except BaseException:
        sock.close()
        raise


def poll_readable(fds: list[int], timeout: float) -> list[int]:
    """The descriptors that are readable (poll, not select: a service may hold more than 1024 fds)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return [fd for fd, _event in poller.poll(timeout * 1000)]


class Inotify:
    """Watches directories for changes to a few file names (inotify through libc, no dependency)."""

    def __init__(self, names_by_dir: dict[Path, set[str]]):
        self.fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.names_by_dir = names_by_dir
        self._dirs: dict[int, Path] = {}  # watch descriptor -> directory

    def ensure_watches(self) -> None:
        """Watch every directory that exists now (they appear with `proximity up`)."""
        watched = set(self._dirs.values())
        for directory in self.names_by_dir:
            if directory not in watched and directory.is_dir():
                wd = _libc.inotify_add_watch(self.fd, os.fsencode(directory), WATCH_MASK)
                if wd >= 0:
                    self._dirs[wd] = directory

    def read(self) -> bool:
        """Drain pending events; True if one concerns a watched name (or a watch went away)."""
        relevant = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return relevant
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size: offset + _EVENT.size + length].rstrip(b"\0").decode(errors="replace")
                offset += _EVENT.size + length
                directory = self._dirs.get(wd)
                if mask & IN_Q_OVERFLOW:  # events were lost: look at everything again
                    relevant = True
                elif mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):
                    self._dirs.pop(wd, None)
                    relevant = True
                elif directory is not None and name in self.names_by_dir.get(directory, ()):
                    relevant = True

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
