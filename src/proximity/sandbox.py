"""A Proxmox-like host built from Linux network namespaces, to run Proximity for real.

Sandbox ``NAME`` consists of:

``NAME`` (the "Proxmox host")
    ``eno1`` (one end of a veth pair) enslaved to bridge ``vmbr0`` 198.51.100.2/24 with a
    default route via 198.51.100.1 -- configured by the real ifupdown2 (``ifreload -a``) from a
    Proxmox-style ``/etc/network/interfaces`` that lives under the sandbox root.
``NAME-lan`` (the LAN router and "the internet")
    ``lan0`` 198.51.100.1/24 (peer of ``eno1``), ``inet0`` 203.0.113.10/24 (the internet test
    host), an upstream DNS server (dnsmasq) on 198.51.100.1 answering ``internet.test``.
    ``net.ipv4.ip_forward`` is 0 and there is no route to Proximity's 10.10.0.0/24.
``NAME-HOSTNAME`` (clients, see :func:`attach_client`)
    ``eth0`` (veth) whose peer ``pxcN`` in ``NAME`` is enslaved to a bridge (``prox-net``);
    configured by busybox udhcpc.

Safety rules kept by this module: nothing is ever created in the machine's own network
namespace (every ``ip`` call is ``ip -n NS ...`` or ``ip netns exec NS ...``, veth peers are
created directly inside namespaces, netlink sockets are opened inside a named namespace and never
create one), only documentation ranges are used, and every process started is tracked by a pid
file under :attr:`Sandbox.run_dir` and stopped by pid on :func:`destroy`.

``ip netns exec NAME`` bind-mounts each entry of ``/etc/netns/NAME/`` over ``/etc/<entry>``;
``/etc/netns/NAME/network`` is a symlink to ``<root>/etc/network`` (the mount follows it) and
``/etc/netns/NAME/resolv.conf`` points the host at the upstream DNS.

Ownership: ``<root>/sandbox.json`` is written before anything else is created and
``<root>/clients/HOSTNAME.json`` before a client namespace is created, so :func:`destroy` only
ever removes namespaces and files that it can prove belong to the sandbox.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from proximity.errors import HostError
from proximity.host import ETC_NETNS, NETNS_RUN_DIR, Host, wait_for
from proximity.settings import is_hostname_label

log = logging.getLogger(__name__)

SANDBOX_ROOT = Path(os.environ.get("PROXIMITY_SANDBOX_ROOT", "/var/lib/proximity/sandboxes"))
UPLINK = "vmbr0"
HOST_UPLINK_ADDR = "198.51.100.2/24"
LAN_GATEWAY = "198.51.100.1"
INTERNET_HOST = "203.0.113.10"
INTERNET_NAME = "internet.test"  # the upstream DNS answers this name with INTERNET_HOST

LAN_PREFIXLEN = 24
INTERNET_PREFIXLEN = 24
HOST_NIC = "eno1"  # physical-NIC stand-in in the host namespace
LAN_NIC = "lan0"  # its peer in the LAN namespace, holds LAN_GATEWAY
INTERNET_NIC = "inet0"  # holds INTERNET_HOST in the LAN namespace
INTERNET_NIC_PEER = "inet0p"  # only when the kernel has no dummy driver (veth fallback)
CLIENT_NIC = "eth0"
CLIENT_VETH_PREFIX = "pxc"
DEFAULT_BRIDGE = "prox-net"

HOST_IFUPDOWN2_DIR = Path("/etc/network/ifupdown2")
IFUPDOWN2_LOCK_DIR = Path("/run/network")  # ifupdown2's global lock lives here
IFRELOAD_BUSY_RC = 89  # "Another instance of this program is already running"

UPSTREAM_DNS_PID = "upstream-dns.pid"
UPSTREAM_DNS_LOG = "upstream-dns.log"
META_FILE = "sandbox.json"
CLIENTS_DIR = "clients"

INTERFACES_TEMPLATE = f"""\
auto lo
iface lo inet loopback

iface {HOST_NIC} inet manual

auto {UPLINK}
iface {UPLINK} inet static
\taddress {HOST_UPLINK_ADDR}
\tgateway {LAN_GATEWAY}
\tbridge-ports {HOST_NIC}
\tbridge-stp off
\tbridge-fd 0

source /etc/network/interfaces.d/*
"""

_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,9}")
_IFF_UP = 0x1


class SandboxError(HostError):
    """A sandbox operation failed; the message says what failed and what to do."""


@dataclass(frozen=True)
class Sandbox:
    """A sandbox: host namespace ``name``, LAN namespace ``lan_ns``, files under ``root``."""

    name: str
    lan_ns: str
    root: Path

    @property
    def interfaces_file(self) -> Path:
        """The host's ``/etc/network/interfaces``."""
        return self.root / "etc/network/interfaces"

    @property
    def dnsmasq_conf(self) -> Path:
        """Where Proximity writes its dnsmasq configuration for this sandbox."""
        return self.root / "etc/proximity/dnsmasq.conf"

    @property
    def leases_file(self) -> Path:
        """Proximity's dnsmasq lease file for this sandbox."""
        return self.root / "var/lib/proximity/dnsmasq.leases"

    @property
    def state_dir(self) -> Path:
        """Proximity's own state (backups, lock) for this sandbox."""
        return self.root / "var/lib/proximity"

    @property
    def run_dir(self) -> Path:
        """Pid files of every process started for this sandbox."""
        return self.root / "run"

    def settings_overrides(self) -> dict[str, object]:
        """What Proximity's settings must change to act on this sandbox."""
        return {
            "interfaces_file": str(self.interfaces_file),
            "dnsmasq_conf": str(self.dnsmasq_conf),
            "leases_file": str(self.leases_file),
            "state_dir": str(self.state_dir),
            "run_dir": str(self.run_dir),
            "upstream_dns": [LAN_GATEWAY],
            "netns": self.name,
        }


@dataclass(frozen=True)
class Client:
    """A DHCP client namespace attached to a bridge of the sandbox."""

    hostname: str
    ns: str
    ip: str | None  # leased IPv4 address read from the namespace, None without a lease


# --------------------------------------------------------------------------- validation


def validate_name(name: str) -> None:
    """Check a sandbox name: 1-10 chars of [a-z0-9-], starting with a letter."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise SandboxError(
            f"invalid sandbox name {name!r}: the name must be 1-10 characters of a-z, 0-9 "
            "and '-', starting with a letter; pick a name like 'pve1'"
        )


def _validate_hostname(hostname: str) -> None:
    if not is_hostname_label(hostname):
        raise SandboxError(
            f"invalid client hostname {hostname!r}: the hostname must be an RFC 1123 label "
            "(1-63 characters of letters, digits and '-', not starting or ending with '-'); "
            "pick a name like 'ct101'"
        )
    if hostname.lower() == "lan":
        raise SandboxError(
            "invalid client hostname 'lan': it would clash with the sandbox's LAN namespace; "
            "pick another hostname"
        )


def _check_ns_name(ns: str) -> None:
    if not ns or "/" in ns or ns in (".", "..") or "\0" in ns:
        raise SandboxError(f"invalid network namespace name {ns!r}")


# --------------------------------------------------------------------------- small helpers


def _sandbox(name: str) -> Sandbox:
    return Sandbox(name=name, lan_ns=f"{name}-lan", root=SANDBOX_ROOT / name)


def _client_ns(sb: Sandbox, hostname: str) -> str:
    return f"{sb.name}-{hostname}"


def _meta_path(sb: Sandbox) -> Path:
    return sb.root / META_FILE


def _client_record(sb: Sandbox, hostname: str) -> Path:
    return sb.root / CLIENTS_DIR / f"{hostname}.json"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _ns_exists(ns: str) -> bool:
    return (NETNS_RUN_DIR / ns).exists()


def _fmt(argv: Iterable[str]) -> str:
    return shlex.join(list(argv))


def _run(argv: list[str], timeout: float = 10) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            argv, text=True, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"'{_fmt(argv)}' timed out after {timeout:g}s") from exc
    except OSError as exc:
        raise SandboxError(f"cannot run '{_fmt(argv)}': {exc}; is iproute2 installed?") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise SandboxError(f"'{_fmt(argv)}' failed (exit {proc.returncode}): {detail}")
    return proc


def _ip(ns: str, *args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    """``ip -n NS ...``: always inside a named namespace, never the machine's own."""
    _check_ns_name(ns)
    return _run(["ip", "-n", ns, *args], timeout=timeout)


def ns_run(
    ns: str, argv: list[str], timeout: float = 10, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``ip netns exec ns argv...`` (text, captured); SandboxError on failure if ``check``.

    A timeout always raises SandboxError (the command is killed).
    """
    _check_ns_name(ns)
    cmd = ["ip", "netns", "exec", ns, *argv]
    try:
        proc = subprocess.run(
            cmd, text=True, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(
            f"'{_fmt(argv)}' in network namespace {ns} timed out after {timeout:g}s"
        ) from exc
    except OSError as exc:
        raise SandboxError(f"cannot run 'ip netns exec': {exc}; is iproute2 installed?") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip() or "no output"
        raise SandboxError(
            f"'{_fmt(argv)}' failed in network namespace {ns} (exit {proc.returncode}): {detail}"
        )
    return proc


@contextmanager
def _netlink(ns: str) -> Iterator[Any]:
    """A netlink socket inside ``ns`` (never creates the namespace)."""
    _check_ns_name(ns)
    if not _ns_exists(ns):
        raise SandboxError(f"network namespace {ns} does not exist")
    ipr = Host(ns).iproute()
    try:
        yield ipr
    finally:
        ipr.close()


def _add_ns(ns: str) -> None:
    _check_ns_name(ns)
    _run(["ip", "netns", "add", ns])
    _ip(ns, "link", "set", "lo", "up")


# --------------------------------------------------------------------------- processes


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return True
    state = stat.rsplit(")", 1)[-1].split()[:1]
    return state not in (["Z"], ["X"])


def _ns_id(path: str | Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _pids_in_ns(ns_ids: set[tuple[int, int]]) -> set[int]:
    """Pids whose network namespace is one of ``ns_ids`` (what ``ip netns pids`` does)."""
    if not ns_ids:
        return set()
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _ns_id(entry / "ns/net") in ns_ids:
            pids.add(int(entry.name))
    pids.discard(os.getpid())
    return pids


def _read_pidfile(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 1 else None


def _pid_matches(pid: int, pidfile: Path, ns_ids: set[tuple[int, int]]) -> bool:
    """The process is the one that wrote ``pidfile`` (named on its command line) or runs in
    one of the sandbox's namespaces -- never some unrelated process that reused the pid."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if os.fsencode(str(pidfile)) in cmdline:
        return True
    return _ns_id(f"/proc/{pid}/ns/net") in ns_ids


def _terminate(pids: Iterable[int], grace: float = 3.0) -> list[int]:
    """SIGTERM, wait, SIGKILL; return the pids still alive afterwards."""
    pids = sorted(p for p in set(pids) if p > 1 and p != os.getpid())
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

    def all_gone() -> bool:
        return not any(_alive(p) for p in pids)

    if wait_for(all_gone, grace):
        return []
    for pid in pids:
        if _alive(pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    wait_for(all_gone, 2.0)
    return [p for p in pids if _alive(p)]


# --------------------------------------------------------------------------- create


def _sandbox_files(sb: Sandbox) -> None:
    etc_network = sb.root / "etc/network"
    (etc_network / "interfaces.d").mkdir(parents=True, exist_ok=True)
    sb.interfaces_file.write_text(INTERFACES_TEMPLATE)

    ifupdown2_state = sb.root / "var/lib/ifupdown2"
    ifupdown2_state.mkdir(parents=True, exist_ok=True)
    if not HOST_IFUPDOWN2_DIR.is_dir():
        raise SandboxError(
            f"{HOST_IFUPDOWN2_DIR} is missing; install ifupdown2 ('apt-get install ifupdown2')"
        )
    ifupdown2_copy = etc_network / "ifupdown2"
    shutil.copytree(HOST_IFUPDOWN2_DIR, ifupdown2_copy, symlinks=True)
    conf = ifupdown2_copy / "ifupdown2.conf"
    text = conf.read_text() if conf.exists() else ""
    state_line = f"state_dir={ifupdown2_state}/"
    text, count = re.subn(r"(?m)^\s*state_dir\s*=.*$", state_line, text)
    if count == 0:
        text = text.rstrip("\n") + ("\n" if text else "") + state_line + "\n"
    conf.write_text(text)

    for d in (sb.dnsmasq_conf.parent, sb.state_dir, sb.run_dir):
        d.mkdir(parents=True, exist_ok=True)


def _etc_netns_host(sb: Sandbox) -> None:
    etc = ETC_NETNS / sb.name
    etc.mkdir(parents=True)
    (etc / "network").symlink_to(sb.root / "etc/network", target_is_directory=True)
    (etc / "resolv.conf").write_text(f"nameserver {LAN_GATEWAY}\n")

    # `ip netns exec` must show the sandbox's files, not the machine's, before ifupdown2 runs.
    seen = ns_run(
        sb.name, ["cat", "/etc/network/interfaces", "/etc/network/ifupdown2/ifupdown2.conf"]
    )
    state_line = f"state_dir={sb.root / 'var/lib/ifupdown2'}/"
    if INTERFACES_TEMPLATE not in seen.stdout or state_line not in seen.stdout.splitlines():
        raise SandboxError(
            f"'ip netns exec {sb.name}' does not show {sb.root / 'etc/network'} as /etc/network "
            f"(through the symlink {etc / 'network'}); check that iproute2 supports /etc/netns"
        )


def _ifreload(ns: str, timeout: float = 60) -> None:
    IFUPDOWN2_LOCK_DIR.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        remaining = max(1.0, deadline - time.monotonic())
        proc = ns_run(ns, ["ifreload", "-a"], timeout=remaining, check=False)
        if proc.returncode == 0:
            return
        output = (proc.stderr + proc.stdout).strip()
        busy = proc.returncode == IFRELOAD_BUSY_RC or "Another instance" in output
        if not busy or time.monotonic() + delay >= deadline:
            raise SandboxError(
                f"'ifreload -a' failed in network namespace {ns} (exit {proc.returncode}): "
                f"{output or 'no output'}; check the interfaces file of the sandbox"
                + (" (another ifupdown2 kept the global lock in /run/network)" if busy else "")
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _uplink_problem(ns: str) -> str | None:
    """None if vmbr0 is up with HOST_UPLINK_ADDR and a default route via LAN_GATEWAY."""
    addr, prefixlen = HOST_UPLINK_ADDR.split("/")
    with _netlink(ns) as ipr:
        idx = ipr.link_lookup(ifname=UPLINK)
        if not idx:
            return f"{UPLINK} does not exist"
        link = list(ipr.get_links(idx[0]))[0]
        if not link["flags"] & _IFF_UP:
            return f"{UPLINK} is administratively down"
        operstate = link.get_attr("IFLA_OPERSTATE")
        if operstate != "UP":
            return f"{UPLINK} is not operationally up (operstate {operstate})"
        addrs = {
            (a.get_attr("IFA_ADDRESS"), a["prefixlen"])
            for a in ipr.get_addr(family=socket.AF_INET, index=idx[0])
        }
        if (addr, int(prefixlen)) not in addrs:
            return f"{UPLINK} does not have {HOST_UPLINK_ADDR} (has {sorted(addrs)})"
        for route in ipr.get_routes(family=socket.AF_INET, table=254):
            if (
                route["dst_len"] == 0
                and route.get_attr("RTA_GATEWAY") == LAN_GATEWAY
                and route.get_attr("RTA_OIF") == idx[0]
            ):
                return None
        return f"there is no default route via {LAN_GATEWAY} dev {UPLINK}"


def _add_internet_nic(lan_ns: str) -> str:
    """inet0 with INTERNET_HOST: a dummy, or a veth pair inside lan_ns if the kernel lacks dummy."""
    try:
        _ip(lan_ns, "link", "add", INTERNET_NIC, "type", "dummy")
        kind = "dummy"
    except SandboxError as exc:
        if "Unknown device type" not in str(exc):
            raise
        _ip(lan_ns, "link", "add", INTERNET_NIC, "type", "veth", "peer", "name", INTERNET_NIC_PEER)
        _ip(lan_ns, "link", "set", INTERNET_NIC_PEER, "up")
        kind = "veth"
    _ip(lan_ns, "addr", "add", f"{INTERNET_HOST}/{INTERNET_PREFIXLEN}", "dev", INTERNET_NIC)
    _ip(lan_ns, "link", "set", INTERNET_NIC, "up")
    return kind


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _start_upstream_dns(sb: Sandbox, timeout: float = 10) -> int:
    """Start dnsmasq in the LAN namespace and wait until it answers INTERNET_NAME."""
    pidfile = sb.run_dir / UPSTREAM_DNS_PID
    logfile = sb.root / UPSTREAM_DNS_LOG
    argv = [
        "dnsmasq",
        "--conf-file=/dev/null",
        "--no-hosts",
        "--no-resolv",
        "--bind-interfaces",
        f"--listen-address={LAN_GATEWAY}",
        "--except-interface=lo",
        f"--host-record={INTERNET_NAME},{INTERNET_HOST}",
        f"--pid-file={pidfile}",
        f"--log-facility={logfile}",
        "--log-queries",
    ]
    ns_run(sb.lan_ns, argv, timeout=timeout)  # dnsmasq daemonises; errors come before that
    pid = wait_for(lambda: _read_pidfile(pidfile), timeout)
    if pid is None:
        raise SandboxError(
            f"the upstream DNS (dnsmasq) in {sb.lan_ns} wrote no pid file {pidfile}; see {logfile}"
        )

    last_error = "no answer"

    def answers() -> bool:
        nonlocal last_error
        if not _alive(pid):
            raise SandboxError(
                f"the upstream DNS (dnsmasq, pid {pid}) in {sb.lan_ns} exited: {_log_tail(logfile)}"
            )
        found = Host(sb.name).resolve(INTERNET_NAME, LAN_GATEWAY, timeout=0.5, attempts=1)
        if found is None:
            last_error = "no answer"
            return False
        last_error = f"answer {found}"
        return INTERNET_HOST in found

    if not wait_for(answers, timeout):
        raise SandboxError(
            f"the upstream DNS at {LAN_GATEWAY} did not answer {INTERNET_NAME} with "
            f"{INTERNET_HOST} from namespace {sb.name} within {timeout:g}s ({last_error}); "
            f"see {logfile}"
        )
    return pid


def _build(sb: Sandbox) -> dict[str, Any]:
    started = time.monotonic()
    meta: dict[str, Any] = {
        "name": sb.name,
        "status": "creating",
        "root": str(sb.root),
        "namespaces": [sb.name, sb.lan_ns],
        "etc_netns": [str(ETC_NETNS / sb.name)],
        "links": {sb.name: [HOST_NIC, UPLINK], sb.lan_ns: [LAN_NIC, INTERNET_NIC]},
        "pid_files": [str(sb.run_dir / UPSTREAM_DNS_PID)],
        "files": [str(sb.interfaces_file), str(sb.root / "etc/network/ifupdown2")],
    }
    _write_json(_meta_path(sb), meta)  # first: proves ownership to destroy()
    _sandbox_files(sb)

    _add_ns(sb.name)
    _add_ns(sb.lan_ns)
    _ip(sb.name, "link", "add", HOST_NIC, "type", "veth",
        "peer", "name", LAN_NIC, "netns", sb.lan_ns)  # fmt: skip
    _ip(sb.lan_ns, "addr", "add", f"{LAN_GATEWAY}/{LAN_PREFIXLEN}", "dev", LAN_NIC)
    _ip(sb.lan_ns, "link", "set", LAN_NIC, "up")
    meta["internet_nic_kind"] = _add_internet_nic(sb.lan_ns)
    if meta["internet_nic_kind"] == "veth":
        meta["links"][sb.lan_ns].append(INTERNET_NIC_PEER)
    ns_run(sb.lan_ns, ["sysctl", "-qw", "net.ipv4.ip_forward=0"])

    _etc_netns_host(sb)
    _ifreload(sb.name)
    problems: list[str] = []

    def uplink_ok() -> bool:
        problems[:] = [_uplink_problem(sb.name) or ""]
        return not problems[0]

    if not wait_for(uplink_ok, 10):
        raise SandboxError(
            f"after 'ifreload -a' in {sb.name}: {problems[0]}; "
            f"check {sb.interfaces_file} and 'ip netns exec {sb.name} ifquery -a --check'"
        )

    meta["upstream_dns_pid"] = _start_upstream_dns(sb)
    meta["status"] = "ready"
    meta["create_seconds"] = round(time.monotonic() - started, 3)
    _write_json(_meta_path(sb), meta)
    return meta


def create(name: str) -> Sandbox:
    """Create sandbox ``name``; on any failure it is destroyed again and the error re-raised."""
    validate_name(name)
    sb = _sandbox(name)
    if _ns_exists(sb.name):
        raise SandboxError(
            f"sandbox {name} exists; destroy it with 'proximity sandbox destroy {name}'"
        )
    if _ns_exists(sb.lan_ns):
        raise SandboxError(
            f"network namespace {sb.lan_ns} exists already (used by another sandbox or client); "
            "choose another sandbox name"
        )
    leftovers = [str(p) for p in (sb.root, ETC_NETNS / name) if p.exists() or p.is_symlink()]
    if leftovers:
        raise SandboxError(
            f"leftovers of an earlier sandbox {name} exist ({', '.join(leftovers)}); "
            f"remove them with 'proximity sandbox destroy {name}'"
        )
    SANDBOX_ROOT.mkdir(parents=True, exist_ok=True)
    try:
        sb.root.mkdir()  # atomic claim of the name
    except FileExistsError as exc:
        raise SandboxError(
            f"sandbox {name} is being created by someone else ({sb.root} appeared); "
            f"destroy it with 'proximity sandbox destroy {name}'"
        ) from exc
    sb.root.chmod(0o755)  # dnsmasq drops to 'nobody' and must reach files below
    try:
        _build(sb)
    except BaseException as exc:
        try:
            destroy(name)
        except Exception as cleanup:  # keep the original error, mention the cleanup failure
            exc.add_note(f"cleaning up the half-created sandbox also failed: {cleanup}")
        raise
    return sb


# --------------------------------------------------------------------------- load


def load(name: str) -> Sandbox:
    """The existing sandbox ``name``; SandboxError if it does not exist or is incomplete."""
    validate_name(name)
    sb = _sandbox(name)
    if not _ns_exists(name):
        raise SandboxError(
            f"sandbox {name} does not exist; create it with 'proximity sandbox create {name}'"
        )
    meta = _read_json(_meta_path(sb))
    if meta is None:
        raise SandboxError(
            f"network namespace {name} exists but is not a Proximity sandbox ({_meta_path(sb)} is "
            "missing); choose another sandbox name"
        )
    if meta.get("status") != "ready":
        raise SandboxError(
            f"sandbox {name} is incomplete (its creation did not finish); recreate it with "
            f"'proximity sandbox destroy {name}' and 'proximity sandbox create {name}'"
        )
    return sb


# --------------------------------------------------------------------------- clients


def _client_ip(ns: str) -> str | None:
    if not _ns_exists(ns):
        return None
    with _netlink(ns) as ipr:
        idx = ipr.link_lookup(ifname=CLIENT_NIC)
        if not idx:
            return None
        for addr in ipr.get_addr(family=socket.AF_INET, index=idx[0]):
            if addr["scope"] == 0:  # global
                return str(addr.get_attr("IFA_ADDRESS"))
    return None


def _udhcpc_script(sb: Sandbox) -> Path:
    """Path of data/udhcpc.script, copied to run_dir if the installed copy is not executable."""
    ref = resources.files("proximity").joinpath("data", "udhcpc.script")
    path = Path(str(ref))
    if path.is_file() and os.access(path, os.X_OK):
        return path
    copy = sb.run_dir / "udhcpc.script"
    copy.write_bytes(ref.read_bytes())
    copy.chmod(0o755)
    return copy


def _free_veth_name(sb: Sandbox) -> str:
    with _netlink(sb.name) as ipr:
        names = {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
    n = 0
    while f"{CLIENT_VETH_PREFIX}{n}" in names:
        n += 1
    return f"{CLIENT_VETH_PREFIX}{n}"


def attach_client(
    sb: Sandbox, hostname: str, bridge: str = DEFAULT_BRIDGE, timeout: float = 15
) -> Client:
    """Create client namespace ``NAME-hostname`` on ``bridge`` and get a DHCP lease with udhcpc."""
    _validate_hostname(hostname)
    ns = _client_ns(sb, hostname)
    record = _client_record(sb, hostname)
    if not _ns_exists(sb.name):
        raise SandboxError(
            f"sandbox {sb.name} does not exist; create it with 'proximity sandbox create {sb.name}'"
        )
    if record.exists():
        raise SandboxError(
            f"client {hostname} is already attached to sandbox {sb.name}; detach it first"
        )
    if _ns_exists(ns):
        raise SandboxError(
            f"network namespace {ns} exists already (another sandbox uses it); "
            "pick another hostname"
        )
    with _netlink(sb.name) as ipr:
        if not ipr.link_lookup(ifname=bridge):
            raise SandboxError(
                f"bridge {bridge} does not exist in sandbox {sb.name}; set Proximity up in the "
                f"sandbox first (check with 'proximity status --sandbox {sb.name}')"
            )

    record.parent.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"hostname": hostname, "ns": ns, "bridge": bridge, "host_veth": None}
    _write_json(record, info)  # before the namespace exists: proves ownership to destroy()
    try:
        _add_ns(ns)
        etc = ETC_NETNS / ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("")  # udhcpc.script rewrites it in place

        for _attempt in range(5):  # another attach may take the same free name meanwhile
            veth = _free_veth_name(sb)
            try:
                _ip(sb.name, "link", "add", veth, "type", "veth",
                    "peer", "name", CLIENT_NIC, "netns", ns)  # fmt: skip
                break
            except SandboxError as exc:
                if "exists" not in str(exc):
                    raise
        else:
            raise SandboxError(f"could not find a free {CLIENT_VETH_PREFIX}N name in {sb.name}")
        info["host_veth"] = veth
        _write_json(record, info)
        _ip(sb.name, "link", "set", veth, "master", bridge)
        _ip(sb.name, "link", "set", veth, "up")
        _ip(ns, "link", "set", CLIENT_NIC, "up")

        argv = [
            "busybox", "udhcpc", "-i", CLIENT_NIC, "-q", "-n", "-t", "5", "-T", "1",
            "-x", f"hostname:{hostname}", "-s", str(_udhcpc_script(sb)),
        ]  # fmt: skip
        proc = ns_run(ns, argv, timeout=timeout, check=False)
        ip = _client_ip(ns)
        if proc.returncode != 0 or ip is None:
            output = " | ".join((proc.stderr + proc.stdout).strip().splitlines()[-3:])
            raise SandboxError(
                f"client {hostname} got no DHCP lease on {bridge} in sandbox {sb.name} "
                f"(udhcpc exit {proc.returncode}: {output or 'no output'}); "
                f"check 'proximity status --sandbox {sb.name}'"
            )
    except BaseException as exc:
        try:
            detach_client(sb, hostname)
        except Exception as cleanup:
            exc.add_note(f"removing the half-attached client also failed: {cleanup}")
        raise
    return Client(hostname=hostname, ns=ns, ip=ip)


def detach_client(sb: Sandbox, hostname: str) -> None:
    """Remove client ``hostname`` (namespace, veth, /etc/netns entry). No-op if not attached."""
    _validate_hostname(hostname)
    ns = _client_ns(sb, hostname)
    record = _client_record(sb, hostname)
    info = _read_json(record)
    if info is None:
        return  # not ours (or already gone): never touch a namespace we cannot prove we made
    if _ns_exists(ns):
        ns_id = _ns_id(NETNS_RUN_DIR / ns)
        survivors = _terminate(_pids_in_ns({ns_id} if ns_id else set()))
        if survivors:
            raise SandboxError(
                f"processes {survivors} in client namespace {ns} survived SIGKILL; "
                "retry the detach later"
            )
    veth = info.get("host_veth")
    if veth and _ns_exists(sb.name):
        with _netlink(sb.name) as ipr:
            present = bool(ipr.link_lookup(ifname=veth))
        if present:
            _ip(sb.name, "link", "del", veth)
    if _ns_exists(ns):
        _run(["ip", "netns", "delete", ns])
    _remove_path(ETC_NETNS / ns)
    record.unlink(missing_ok=True)


def clients(sb: Sandbox) -> list[Client]:
    """The attached clients of the sandbox, by hostname, with their current addresses."""
    result = []
    for record in sorted((sb.root / CLIENTS_DIR).glob("*.json")):
        info = _read_json(record) or {}
        hostname = info.get("hostname") or record.stem
        ns = info.get("ns") or _client_ns(sb, hostname)
        result.append(Client(hostname=hostname, ns=ns, ip=_client_ip(ns)))
    return result


# --------------------------------------------------------------------------- destroy


def _remove_path(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path)  # does not follow symlinks inside (e.g. /etc/netns/NAME/network)


def _etc_netns_is_ours(sb: Sandbox) -> bool:
    etc = ETC_NETNS / sb.name
    link = etc / "network"
    if link.is_symlink():
        return Path(os.readlink(link)) == sb.root / "etc/network"
    try:
        return etc.is_dir() and not any(etc.iterdir())
    except OSError:
        return False


def _stop_containers(sb: Sandbox) -> list[str]:
    """LXC containers have network namespaces of their own: stop them by name, not by namespace."""
    lxcpath = sb.state_dir / "lxc"
    if not lxcpath.is_dir() or not _ns_exists(sb.name):
        return []
    from proximity.containers.lxc import LxcBackend  # the sandbox works without LXC installed

    backend, errors = LxcBackend(sb.name, lxcpath), []
    for container in backend.list():
        try:
            backend.destroy(container.vmid)
        except Exception as exc:  # keep destroying the rest
            errors.append(f"container {container.vmid}: {exc}")
    return errors


def destroy(name: str) -> None:
    """Stop every process and remove every namespace, /etc/netns entry and file of the sandbox.

    Idempotent. Refuses (SandboxError) to touch a namespace ``name`` that is not a sandbox.
    """
    validate_name(name)
    sb = _sandbox(name)
    meta = _read_json(_meta_path(sb))
    if meta is None:
        if _ns_exists(name):
            raise SandboxError(
                f"network namespace {name} exists but is not a Proximity sandbox "
                f"({_meta_path(sb)} is missing); not touching it (if it is yours, remove it with "
                f"'ip netns delete {name}')"
            )
        if _etc_netns_is_ours(sb):
            _remove_path(ETC_NETNS / name)
        _remove_path(sb.root)
        return

    namespaces: list[str] = []
    for record in sorted((sb.root / CLIENTS_DIR).glob("*.json")):
        info = _read_json(record) or {}
        namespaces.append(str(info.get("ns") or _client_ns(sb, record.stem)))
    for ns in [*meta.get("namespaces", []), sb.lan_ns, sb.name]:
        if isinstance(ns, str) and ns not in namespaces:
            namespaces.append(ns)
    for ns in namespaces:
        _check_ns_name(ns)

    errors: list[str] = []
    errors += _stop_containers(sb)
    ns_ids = {i for i in (_ns_id(NETNS_RUN_DIR / ns) for ns in namespaces if _ns_exists(ns)) if i}

    pids: set[int] = set()
    for pidfile in sorted(sb.run_dir.glob("*.pid")):
        pid = _read_pidfile(pidfile)
        if pid is not None and _alive(pid) and _pid_matches(pid, pidfile, ns_ids):
            pids.add(pid)
    pids |= _pids_in_ns(ns_ids)
    survivors = _terminate(pids)
    if survivors:
        errors.append(f"processes {survivors} survived SIGKILL")

    for ns in namespaces:  # clients first, then the LAN, then the host
        if _ns_exists(ns):
            try:
                _run(["ip", "netns", "delete", ns])
            except SandboxError as exc:
                errors.append(str(exc))
        try:
            _remove_path(ETC_NETNS / ns)
        except OSError as exc:
            errors.append(f"cannot remove {ETC_NETNS / ns}: {exc}")

    if errors:
        raise SandboxError(
            f"destroying sandbox {name} is incomplete: {'; '.join(errors)}; "
            f"fix that and run 'proximity sandbox destroy {name}' again"
        )
    try:
        _remove_path(sb.root)
    except OSError as exc:
        raise SandboxError(
            f"cannot remove {sb.root}: {exc}; remove it by hand or run "
            f"'proximity sandbox destroy {name}' again"
        ) from exc
