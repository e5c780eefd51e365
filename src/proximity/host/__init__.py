"""The host: the one place with side effects (commands, files, locks, signals, netlink).

``Host`` acts on the machine, or inside one network namespace when ``netns``
is set (the sandbox): commands are wrapped in ``ip netns exec``, netlink and
sockets are opened inside the namespace. ``DryRunHost`` reads like ``Host``
but only records what it would change, which is how ``--dry-run`` previews
the very code path that ``up`` runs; it touches nothing, not even a directory.
There is one subprocess runner (``_run_argv``), one atomic writer
(``write_text``) and one lock helper (``lock``).
"""

from __future__ import annotations

import contextlib
import glob as _glob
import errno
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from proximity.errors import HostError
from proximity.host.netns import CLONE_NEWNET, ETC_NETNS, NETNS_RUN_DIR, inside_netns  # noqa: F401
from proximity.host.dns import DnsQueries
from proximity.host.processes import pid_alive, pid_cmdline, wait_for



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


class Host(DnsQueries):
    """The real machine, or one network namespace of it."""

    dry_run = False
    nft_in_process = True  # nftables through libnftables where it loads (a stand-in host says no)

    def __init__(self, netns: str | None = None):
        self.netns = netns

    def sibling(self, netns: str | None) -> Host:
        """The same kind of host for another network namespace (None: the machine's own)."""
        return Host(netns)

    # -- commands ------------------------------------------------------------
    def _wrap(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else list(argv)

    def query(self, argv: list[str], timeout: float = 15, input: str | None = None) -> Result:
        """Run a command that only reads; runs in dry runs too. Never raises on exit status."""
        return self._run_argv(self._wrap(argv), timeout, input)

    def run(self, argv: list[str], timeout: float = 30, check: bool = True, input: str | None = None) -> Result:
        """Run a command that changes the host; raises CommandError when it fails (unless not ``check``).

        A timeout or a missing program raises CommandError in any case.
        """
        return _checked(self._run_argv(self._wrap(argv), timeout, input), check)

    def ip(self, *args: str, timeout: float = 15, check: bool = True) -> Result:
        """``ip ARGS`` changing this host's namespace; CommandError when it fails (unless not ``check``).

        ``ip -n`` joins the namespace itself: one exec and no mount namespace, where
        ``ip netns exec`` costs two.
        """
        return _checked(self._run_argv(self._ip_argv(args), timeout), check)

    def ip_json(self, *args: str) -> list[dict]:
        """``ip -json ARGS`` in this host's namespace, parsed (``ip -n``, as :meth:`ip`).

        Far cheaper than importing pyroute2 for one dump.
        """
        result = _checked(self._run_argv(self._ip_argv(("-json", *args)), timeout=15), True)
        return json.loads(result.stdout or "[]")

    def _ip_argv(self, args: tuple[str, ...]) -> list[str]:
        return ["ip", *(["-n", self.netns] if self.netns else []), *args]

    def _run_argv(self, full: list[str], timeout: float, input: str | None = None) -> Result:
        try:
            proc = subprocess.run(
                full, capture_output=True, text=True, timeout=timeout, start_new_session=True,
                **({"input": input} if input is not None else {"stdin": subprocess.DEVNULL}),
            )
        except subprocess.TimeoutExpired as exc:
            raise CommandError(full, None, _text(exc.stderr), timed_out=True) from None
        except FileNotFoundError:
            raise CommandError(full, 127, f"{full[0]}: command not found") from None
        except OSError as exc:  # not executable, too many processes, ...
            raise CommandError(full, 126, f"cannot run {full[0]}: {exc.strerror or exc}") from None
        return Result(full, proc.returncode, proc.stdout, proc.stderr)

    def describe(self, argv: list[str]) -> list[str]:
        return self._wrap(argv)

    # -- files ----------------------------------------------------------------
    def read_text(self, path: Path, errors: str = "strict") -> str | None:
        """The file's text, None if it is missing. ``errors="replace"`` reads a damaged file (bad bytes
        become U+FFFD) instead of raising, for caches whose bad lines are skipped."""
        try:
            with open(path, encoding="utf-8", errors=errors, newline="") as fh:
                return fh.read()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise HostError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None

    def write_text(self, path: Path, text: str, mode: int = 0o644, durable: bool = True) -> None:
        """Atomic write: temp file in the same directory, fsync, rename (no fsync if not ``durable``:
        for a record whose loss after a crash only costs redoing a step).

        An existing file keeps its mode and owner. On any failure (a full disk, a read-only
        file system) the old file is intact and a HostError names the path.
        """
        try:
            self._write_atomic(path, text, mode, durable)
        except OSError as exc:
            hint = {errno.ENOSPC: "free some space on that file system", errno.EROFS: "the file system is read-only",
                    errno.EDQUOT: "the disk quota is exceeded"}.get(exc.errno, "check the path and its permissions")
            raise HostError(f"cannot write {path}: {exc.strerror or exc}; {hint}. The old file is unchanged.") from None

    # Bytes left free after any write: a full disk must never be reached by Proximity's own writes, so
    # dnsmasq can still record its leases (a truncated leases file hands addresses out twice).
    write_spare = 1 << 20

    def free_space(self, path: Path) -> int | None:
        """Bytes an unprivileged writer (dnsmasq) can still use where ``path`` is; 0 when no inode is left;
        None when unknown (no such directory)."""
        for directory in (path, *path.parents):
            if directory.is_dir():
                try:
                    st = os.statvfs(directory)
                except OSError:
                    return None
                return 0 if st.f_files and not st.f_favail else st.f_bavail * st.f_frsize
        return None

    def _write_atomic(self, path: Path, text: str, mode: int, durable: bool = True) -> None:
        # A symlinked file (configuration management links /etc/network/interfaces) stays a link:
        # the target is replaced, atomically, in the target's own directory.
        path = Path(os.path.realpath(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode("utf-8")
        free = self.free_space(path.parent)
        if free is not None and free < len(data) + self.write_spare:
            raise HostError(f"cannot write {path}: No space left on device ({free // 1024} KiB free; Proximity keeps "
                            f"{self.write_spare // 1024} KiB spare so dnsmasq can still record its leases); free some "
                            "space on that file system (`df -h` shows it). The old file is unchanged.")
        try:
            st = path.stat()
            mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
        except FileNotFoundError:
            owner = None
        _remove_dead_temp_files(path)
        tmp = path.parent / f".{path.name}.{os.getpid()}-{threading.get_native_id()}{TEMP_SUFFIX}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                if durable:
                    os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            if owner:
                os.chown(tmp, *owner)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        if not durable:
            return
        dirfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)

    def remove(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def glob(self, pattern: str) -> list[Path]:
        """The paths a glob matches as programs in this namespace see them."""
        return sorted(Path(p) for p in _glob.glob(self.as_seen(pattern)))

    def as_seen(self, pattern: str) -> str:
        """A path (or glob) as programs in this namespace see it: ``ip netns exec NAME`` mounts
        ``/etc/netns/NAME/X`` over ``/etc/X`` (ifreload runs that way in a sandbox)."""
        if self.netns and pattern.startswith("/etc/"):
            first, _, rest = pattern[len("/etc/"):].partition("/")
            over = ETC_NETNS / self.netns / first
            if first and over.exists():
                over = Path(os.path.realpath(over))  # name the files where the admin edits them
                pattern = str(over / rest) if rest else str(over)
        return pattern

    def mkdir(self, path: Path, mode: int | None = None, exist_ok: bool = True) -> None:
        """Create ``path`` and its parents; ``mode`` is set exactly (no umask).

        With ``exist_ok=False`` an existing ``path`` raises FileExistsError: an atomic claim of a name.
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir(exist_ok=exist_ok)
            if mode is not None:
                path.chmod(mode)
        except FileExistsError:
            if not exist_ok:
                raise
            raise HostError(f"cannot create the directory {path}: a file of that name exists") from None
        except OSError as exc:
            raise HostError(f"cannot create the directory {path}: {exc.strerror or exc}") from None

    def symlink(self, path: Path, target: Path) -> None:
        """``path`` -> ``target`` (a new link; an existing ``path`` is an error)."""
        try:
            path.symlink_to(target, target_is_directory=target.is_dir())
        except OSError as exc:
            raise HostError(f"cannot create the symlink {path} -> {target}: {exc.strerror or exc}") from None

    def copy_tree(self, source: Path, target: Path) -> None:
        """Copy directory ``source`` to the new ``target``, symlinks as symlinks."""
        try:
            shutil.copytree(source, target, symlinks=True)
        except (OSError, shutil.Error) as exc:
            raise HostError(f"cannot copy {source} to {target}: {exc}") from None

    def remove_tree(self, path: Path) -> None:
        """Remove a file, a symlink (not what it points to) or a directory tree; nothing if missing.

        Symlinks inside the tree are removed, never followed.
        """
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
        elif path.is_dir():
            shutil.rmtree(path)

    @contextlib.contextmanager
    def lock(self, path: Path, timeout: float = 60, what: str = "another Proximity run") -> Iterator[None]:
        """Hold an exclusive lock on ``path`` (flock, released by the kernel if we die).

        Waits up to ``timeout`` seconds, then names the holder's pid, which the file holds.
        """
        self.mkdir(path.parent)
        try:
            fh = open(path, "a+")
        except OSError as exc:
            raise HostError(f"cannot open the lock file {path}: {exc.strerror or exc}") from None
        with fh:
            if not wait_for(lambda: _try_lock(fh), timeout=timeout, interval=0.05):
                fh.seek(0)
                holder = fh.read().strip() or "unknown"
                raise HostError(f"{what} (pid {holder}) holds {path}; wait for it to finish")
            try:
                with contextlib.suppress(OSError):  # the holder's pid is for messages only (a full disk)
                    os.ftruncate(fh.fileno(), 0)
                    os.pwrite(fh.fileno(), str(os.getpid()).encode(), 0)
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

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

    # -- processes ---------------------------------------------------------------
    @property
    def has_systemd(self) -> bool:
        """systemd is PID 1 (a real Proxmox host). A sandbox never uses it."""
        return self.netns is None and Path("/run/systemd/system").is_dir()

    def kill(self, pid: int, sig: int = signal.SIGTERM) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def terminate(self, pids: Iterable[int], grace: float = 3.0) -> list[int]:
        """SIGTERM, wait up to ``grace`` seconds, SIGKILL the rest; return the pids still alive then.

        Never signals pid 1 or this process.
        """
        pids = sorted(p for p in set(pids) if p > 1 and p != os.getpid())
        for pid in pids:
            self.kill(pid, signal.SIGTERM)

        def all_gone() -> bool:
            return not any(self.alive(p) for p in pids)

        if wait_for(all_gone, grace):
            return []
        for pid in pids:
            if self.alive(pid):
                self.kill(pid, signal.SIGKILL)
        wait_for(all_gone, 2.0)
        return [p for p in pids if self.alive(p)]

    def alive(self, pid: int) -> bool:
        return pid_alive(pid)

    def pid_cmdline(self, pid: int) -> list[str] | None:
        return pid_cmdline(pid)


TEMP_SUFFIX = ".proximity-tmp"


def _remove_dead_temp_files(path: Path) -> None:
    """Temp files of writers that were killed (kill -9 between create and rename) are removed.

    A temp file is named for its target and the writer's pid and thread, so only a dead writer's goes.
    Every such file in the directory goes, not only the target's: a backup has a new name each time,
    so a backup's temp file would otherwise stay forever.
    """
    with os.scandir(path.parent) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                pid = name[:-len(TEMP_SUFFIX)].rsplit(".", 1)[-1].split("-")[0]
                if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)


def _try_lock(fh) -> bool:
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _checked(result: Result, check: bool) -> Result:
    if check and not result.ok:
        raise CommandError(result.argv, result.returncode, result.stderr or result.stdout)
    return result


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


# Last: the dry-run host is a Host (re-exported here, where every caller looks for it).
from proximity.host.dryrun import DryRunHost  # noqa: E402, F401
