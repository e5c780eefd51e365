"""The host: the one place with side effects (files, commands, netlink, processes).

``Host`` acts on the machine, or inside one network namespace when ``netns``
is set (the sandbox): commands are wrapped in ``ip netns exec``, netlink and
sockets are opened inside the namespace. ``DryRunHost`` reads like ``Host``
but only records what it would change, which is how ``--dry-run`` previews
the very code path that ``up`` runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar
from dataclasses import dataclass, field
from pathlib import Path

from proximity.errors import HostError

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = Path("/run/netns")  # `ip netns` names namespaces here
ETC_NETNS = Path("/etc/netns")  # ... and bind-mounts NAME/* over /etc for `ip netns exec`
_libc = ctypes.CDLL(None, use_errno=True)
_netns_lock = threading.Lock()


class CommandError(HostError):
    """A command failed or timed out; the message carries its argv and stderr."""

    def __init__(self, argv: list[str], returncode: int | None, stderr: str, timed_out: bool = False):
        self.argv, self.returncode, self.stderr, self.timed_out = argv, returncode, stderr, timed_out
        what = "timed out" if timed_out else f"exited with {returncode}"
        detail = f": {stderr.strip()}" if stderr.strip() else ""
        super().__init__(f"`{shlex.join(argv)}` {what}{detail}")


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


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


class Host:
    """The real machine, or one network namespace of it."""

    dry_run = False

    def __init__(self, netns: str | None = None):
        self.netns = netns

    # -- commands ------------------------------------------------------------
    def _wrap(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else list(argv)

    def query(self, argv: list[str], timeout: float = 15) -> Result:
        """Run a command that only reads; runs in dry runs too. Never raises on exit status."""
        return self._exec(argv, timeout)

    def run(self, argv: list[str], timeout: float = 30) -> Result:
        """Run a command that changes the host; raises CommandError when it fails."""
        result = self._exec(argv, timeout)
        if not result.ok:
            raise CommandError(result.argv, result.returncode, result.stderr or result.stdout)
        return result

    def ip_json(self, *args: str) -> list[dict]:
        """``ip -json ARGS`` in this host's namespace, parsed.

        ``ip -n`` joins the namespace itself: one exec and no mount namespace, where
        ``ip netns exec`` costs two. Far cheaper than importing pyroute2 for one dump.
        """
        argv = ["ip", *(["-n", self.netns] if self.netns else []), "-json", *args]
        result = self._run_argv(argv, timeout=15)
        if not result.ok:
            raise CommandError(argv, result.returncode, result.stderr)
        return json.loads(result.stdout or "[]")

    def _exec(self, argv: list[str], timeout: float) -> Result:
        return self._run_argv(self._wrap(argv), timeout)

    def _run_argv(self, full: list[str], timeout: float) -> Result:
        try:
            proc = subprocess.run(
                full, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as exc:
            raise CommandError(full, None, _text(exc.stderr), timed_out=True) from None
        except FileNotFoundError:
            raise CommandError(full, 127, f"{full[0]}: command not found") from None
        return Result(full, proc.returncode, proc.stdout, proc.stderr)

    def describe(self, argv: list[str]) -> list[str]:
        return self._wrap(argv)

    # -- files ----------------------------------------------------------------
    def read_text(self, path: Path) -> str | None:
        try:
            with open(path, encoding="utf-8", newline="") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def write_text(self, path: Path, text: str, mode: int = 0o644) -> None:
        """Atomic write: temp file in the same directory, fsync, rename.

        An existing file keeps its mode and owner. On any failure (a full disk, a read-only
        file system) the old file is intact and a HostError names the path.
        """
        try:
            self._write_atomic(path, text, mode)
        except OSError as exc:
            hint = {errno.ENOSPC: "free some space on that file system", errno.EROFS: "the file system is read-only",
                    errno.EDQUOT: "the disk quota is exceeded"}.get(exc.errno, "check the path and its permissions")
            raise HostError(f"cannot write {path}: {exc.strerror or exc}; {hint}. The old file is unchanged.") from None

    def _write_atomic(self, path: Path, text: str, mode: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            st = path.stat()
            mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
        except FileNotFoundError:
            owner = None
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            if owner:
                os.chown(tmp, *owner)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dirfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)

    def remove(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    # -- kernel state ------------------------------------------------------------
    def iproute(self):
        """A netlink socket in this host's namespace (pyroute2 is imported on first use: it is slow)."""
        from pyroute2 import IPRoute

        # flags=0: a missing namespace is an error, never silently created
        return IPRoute(netns=self.netns, flags=0) if self.netns else IPRoute()

    def read_sysctl(self, key: str) -> str | None:
        path = "/proc/sys/" + key.replace(".", "/")
        with inside_netns(self.netns):
            try:
                with open(path) as fh:
                    return fh.read().strip()
            except OSError:
                return None

    def write_sysctl(self, key: str, value: str) -> None:
        self.run(["sysctl", "-q", "-w", f"{key}={value}"])

    def resolve(self, name: str, server: str, timeout: float = 1.0, attempts: int = 2) -> list[str] | None:
        """A records of ``name`` asked of ``server`` from inside this host's namespace.

        ``[]`` is an answer without addresses (NXDOMAIN included); None means no answer at all.
        UDP datagrams can be lost, so the query is retried like a stub resolver does.
        """
        import dns.exception  # dnspython is only needed by the commands that ask
        import dns.message
        import dns.query
        import dns.rdatatype

        query = dns.message.make_query(name, "A")
        for _ in range(attempts):
            try:
                with self.udp_socket() as sock:
                    answer = dns.query.udp(query, server, timeout=timeout, sock=sock)
            except (dns.exception.DNSException, OSError):
                continue
            return [item.address for rrset in answer.answer if rrset.rdtype == dns.rdatatype.A for item in rrset]
        return None

    def udp_socket(self) -> socket.socket:
        """A non-blocking UDP socket in this host's network namespace (what dnspython expects)."""
        with inside_netns(self.netns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        return sock

    # -- processes ---------------------------------------------------------------
    @property
    def has_systemd(self) -> bool:
        """systemd is PID 1 (a real Proxmox host). A sandbox never uses it."""
        return self.netns is None and Path("/run/systemd/system").is_dir()

    def kill(self, pid: int, sig: int = signal.SIGTERM) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def pid_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part] or None


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 1.5, 0.25)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


@dataclass
class DryRunHost(Host):
    """Reads from the real host; records every change instead of making it."""

    netns: str | None = None
    files: list[dict[str, str]] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    _written: dict[str, str | None] = field(default_factory=dict)
    dry_run = True

    def run(self, argv: list[str], timeout: float = 30) -> Result:
        full = self._wrap(argv)
        self.commands.append(full)
        return Result(full, 0, "", "")

    def write_text(self, path: Path, text: str, mode: int = 0o644) -> None:
        before = self.read_text(path)
        self._written[str(path)] = text
        self.files.append({"path": str(path), "before": before or "", "after": text})

    def remove(self, path: Path) -> None:
        before = self.read_text(path)
        if before is not None:
            self._written[str(path)] = None
            self.files.append({"path": str(path), "before": before, "after": ""})

    def read_text(self, path: Path) -> str | None:
        if str(path) in self._written:
            return self._written[str(path)]
        return super().read_text(path)

    def kill(self, pid: int, sig: int = signal.SIGTERM) -> None:
        self.commands.append(["kill", f"-{signal.Signals(sig).name.removeprefix('SIG')}", str(pid)])
