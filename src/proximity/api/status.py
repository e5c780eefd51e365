"""The status the API serves: a snapshot, refreshed when something changes, never per request.

``StatusSnapshot.get()`` returns the last :class:`NetworkStatus` at once: it starts no process,
opens no socket and reads no file. A background thread keeps that snapshot current:

* **netlink** events (links, IPv4 addresses and routes) from a socket opened in the host's
  network namespace (the sandbox's, or the machine's);
* **inotify** on the directories of the lease file and of dnsmasq's pid file (a lease taken or
  released, dnsmasq started or stopped);
* a **pidfd** on the running dnsmasq: it becomes readable the moment dnsmasq exits, so a killed
  dnsmasq shows as unhealthy within milliseconds;
* a **full refresh** every ``full_every`` seconds (``recheck_every`` while the host is not healthy)
  for what has no event (iptables rules, whether dnsmasq still answers DNS and holds the DHCP
  port), and whenever :meth:`StatusSnapshot.invalidate` is called (after the service changed
  something).

An event-driven refresh is cheap: it re-reads links, addresses and routes (two ``ip -json``
dumps), ``ip_forward``, the pid and the lease file, and reuses the expensive answers (the
firewall rules, ``ss``, the DNS probe) of the last full refresh as long as dnsmasq's pid is the
same. The health verdict and its reasons come from :func:`proximity.network.health.health`, so the
snapshot and ``proximity status`` always agree.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from proximity.api.events import RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_LINK, Inotify, poll_readable
from proximity.host import NETNS_RUN_DIR, inside_netns
from proximity.network.health import NetworkStatus, unknown_status
from proximity.network.intent import intent_file
from proximity.network.observe import Observation
from proximity.network.reconciler import NetworkManager

log = logging.getLogger(__name__)


class _Refresher:
    """Status from observations; a quick refresh reuses the last full one's rules and probes.

    In a full refresh everything is read. In a quick one (after an event), the firewall (iptables and nft), the
    DNS probe and the ports check are reused when dnsmasq's pid is the same; a new pid is probed at once.
    """

    def __init__(self, network: NetworkManager):
        self.network = network
        self._last: Observation | None = None

    def refresh(self, full: bool) -> NetworkStatus:
        last = None if full else self._last
        obs = self.network.observe(probe=True, firewall=last.firewall if last else None,
                                   probes=last.probes if last else None)
        if last is not None and (obs.dns and obs.dns.pid) != (last.dns and last.dns.pid):
            obs = self.network.observe(probe=True, firewall=last.firewall)
        if full:
            self._last = obs
        return self.network.verdict(obs)


class StatusSnapshot:
    """The network status, kept current by a background thread; ``get()`` never waits on the host."""

    def __init__(self, network: NetworkManager, full_every: float = 10.0, recheck_every: float = 2.0,
                 debounce: float = 0.02, first_timeout: float = 30.0):
        self.network = network
        self.full_every = full_every  # a full refresh of a healthy host
        self.recheck_every = recheck_every  # ... of a degraded or unhealthy one, or after a failed probe
        self.debounce = debounce
        self.first_timeout = first_timeout
        self._cond = threading.Condition()
        self._status: NetworkStatus | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._want_full = True
        self._dirty = False
        self._requested = 0  # invalidate() calls so far
        self._served = 0  # invalidate() calls answered by a finished full refresh
        self._refreshes = {"full": 0, "quick": 0}
        self._wake_r = self._wake_w = -1  # a pipe, made with the thread: a snapshot never read costs nothing
        self._netlink: socket.socket | None = None
        self._inotify: Inotify | None = None
        self._pidfd: int | None = None
        self._pid: int | None = None
        self.on_change: Callable[[NetworkStatus], object] | None = None  # called with each new status

    # -- public API ---------------------------------------------------------------------
    def get(self) -> NetworkStatus:
        """The latest status, at once (only the very first call waits for the first refresh)."""
        status = self._status
        if status is not None:
            return status
        self._start()
        with self._cond:
            self._cond.wait_for(lambda: self._status is not None or self._closed, timeout=self.first_timeout)
            if self._status is None:
                return unknown_status(self.network.settings, "the network status is not known yet: the first "
                                      "check of the host has not finished (see the service log)")
            return self._status

    def peek(self) -> NetworkStatus | None:
        """The latest status, or None before the first refresh; never blocks (for async handlers)."""
        if self._status is None:
            self._start()
        return self._status

    def invalidate(self, wait: bool = True, timeout: float = 15.0) -> None:
        """Re-check everything now; with ``wait``, return once the new snapshot is in place.

        Callers that just changed the host (a converge, a container created or destroyed) wait, so
        that their next ``get()`` shows the change.
        """
        self._start()
        with self._cond:
            if self._closed:
                return
            self._requested += 1
            ticket = self._requested
            self._want_full = True
            self._wake()
        if wait and threading.current_thread() is not self._thread:
            with self._cond:
                self._cond.wait_for(lambda: self._served >= ticket or self._closed, timeout=timeout)

    def close(self) -> None:
        """Stop the thread and close its sockets and descriptors."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
            self._wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        if thread is None or not thread.is_alive():
            self._close_sources()
            with self._cond:  # _wake() writes under this lock: never into a closed (reused) descriptor
                for fd in (self._wake_r, self._wake_w):
                    if fd >= 0:
                        os.close(fd)
                self._wake_r = self._wake_w = -1

    @property
    def refreshes(self) -> dict[str, int]:
        """How many full and quick refreshes ran (for tests and the curious)."""
        return dict(self._refreshes)

    # -- the background thread ------------------------------------------------------------
    def _start(self) -> None:
        with self._cond:
            if self._thread is None and not self._closed:
                self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
                self._thread = threading.Thread(target=self._run, name="proximity-status", daemon=True)
                self._thread.start()

    def _wake(self) -> None:
        """Interrupt the thread's wait; call with ``self._cond`` held."""
        with contextlib.suppress(OSError):  # a full pipe is awake enough; a closed one has nobody to wake
            if self._wake_w >= 0:
                os.write(self._wake_w, b"x")

    def _run(self) -> None:
        probe = _Refresher(self.network)
        next_full = 0.0
        try:
            while True:
                with self._cond:
                    if self._closed:
                        return
                    full = self._want_full or time.monotonic() >= next_full
                    quick = self._dirty
                    ticket = self._requested
                    self._want_full = self._dirty = False
                try:
                    if full:
                        self._open_sources()  # before reading: a change from now on is an event
                    if full or quick:
                        status, ok = self._refresh(probe, full)
                        with self._cond:
                            self._status = status
                            if full:
                                self._served = max(self._served, ticket)
                            self._cond.notify_all()
                        if self.on_change is not None:
                            self.on_change(status)
                        if full:  # a failed probe or a sick host is looked at again sooner
                            settled = ok and status.health_status in ("healthy", "down")
                            next_full = time.monotonic() + (self.full_every if settled else min(self.full_every,
                                                                                                self.recheck_every))
                        self._follow_pid(status.dns_pid)
                    self._wait(max(0.0, next_full - time.monotonic()))
                except Exception:  # the thread must not die: the snapshot would freeze
                    log.exception("the status thread hit an error; starting its event sources again")
                    self._close_sources()
                    next_full = time.monotonic() + 1.0
                    with self._cond:
                        self._cond.wait_for(lambda: self._closed, timeout=1.0)
        finally:
            self._close_sources()

    def _refresh(self, probe: _Refresher, full: bool) -> tuple[NetworkStatus, bool]:
        self._refreshes["full" if full else "quick"] += 1
        probe.network = self.network  # the service swaps its manager when the zones change (api.zones)
        try:
            return probe.refresh(full), True
        except Exception as exc:
            log.warning("reading the network status failed: %s", exc)
            return unknown_status(self.network.settings, f"the network status could not be read: {exc}"), False

    def _wait(self, timeout: float) -> None:
        """Block until an event, an invalidate() or the timeout; then let a burst of events settle."""
        fds = [self._wake_r]
        for source in (self._netlink, self._inotify, self._pidfd):
            if source is not None:
                fds.append(source if isinstance(source, int) else source.fileno())
        ready = poll_readable(fds, timeout)
        if not ready:
            return
        if self._drain(ready):
            # A container start, a lease written: events come in bursts. Take them as one.
            time.sleep(self.debounce)
            self._drain(poll_readable([fd for fd in fds if fd != self._pidfd], 0))
            with self._cond:
                self._dirty = True

    def _drain(self, ready: list[int]) -> bool:
        changed = False
        for fd in ready:
            if fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(fd, 4096)
            elif self._netlink is not None and fd == self._netlink.fileno():
                changed = True
                while True:
                    try:
                        self._netlink.recv(65536)
                    except BlockingIOError:
                        break
                    except OSError as exc:  # ENOBUFS: we missed some; the refresh reads all anyway
                        if exc.errno != errno.ENOBUFS:
                            raise
            elif self._inotify is not None and fd == self._inotify.fd:
                changed = self._inotify.read() or changed
            elif fd == self._pidfd:  # dnsmasq exited
                changed = True
                self._close_pidfd()
        return changed

    # -- event sources ------------------------------------------------------------------
    def _open_sources(self) -> None:
        """Open what is missing (the namespace or the directories may appear later)."""
        netns = self.network.host.netns
        if self._netlink is None and (netns is None or (NETNS_RUN_DIR / netns).exists()):
            try:
                with inside_netns(netns):
                    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK
                                         | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
                sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE))
                self._netlink = sock
            except (OSError, RuntimeError) as exc:
                log.debug("no netlink events (%s); relying on the periodic refresh", exc)
        if self._inotify is None:
            s = self.network.settings
            names: dict[Path, set[str]] = {}
            for path in (s.leases_file, s.dns_pid_file, intent_file(s)):  # `up` and `down` write the intent
                names.setdefault(path.parent, set()).add(path.name)
            try:
                self._inotify = Inotify(names)
            except OSError as exc:
                log.debug("no inotify (%s); relying on the periodic refresh", exc)
        if self._inotify is not None:
            self._inotify.ensure_watches()

    def _follow_pid(self, pid: int | None) -> None:
        """Hold a pidfd on dnsmasq: it turns readable when dnsmasq exits."""
        if pid == self._pid and (pid is None or self._pidfd is not None):
            return
        self._close_pidfd()
        self._pid = pid
        if pid is None:
            return
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # gone already: look again
            with self._cond:
                self._dirty = True
        except OSError as exc:  # no pidfd (old kernel): the periodic refresh notices
            log.debug("no pidfd for dnsmasq (%s)", exc)

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = None

    def _close_sources(self) -> None:
        self._close_pidfd()
        self._pid = None
        if self._netlink is not None:
            self._netlink.close()
            self._netlink = None
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
