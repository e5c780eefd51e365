"""The local LXC backend: real LXC containers on this machine, or inside a sandbox host.

Containers are named by their vmid ("101", as Proxmox names them), live under ``lxcpath``
(every ``lxc-*`` call gets ``-P lxcpath``) and need no download: the rootfs is a directory with
this machine's busybox (plus the shared libraries it needs when it is not the static build),
``/sbin/init`` = ``data/ct-init.sh`` and ``/usr/share/udhcpc/default.script`` =
``data/udhcpc.script``. The init asks for a DHCP lease (``ip=dhcp``) or finds the static
address LXC configured (``ip=CIDR,gw=GW``), then serves ``hello from <hostname>`` on port 80.

Network namespaces: with ``netns`` set (the sandbox's host namespace), every LXC command runs
in that namespace: ``nsenter --net`` plus a private mount namespace with the namespace's sysfs
(``ip netns exec`` without hiding the cgroups, see _NETNS_EXEC_SH). The container's veth
(``veth<vmid>i0``, as Proxmox names it) is created by ``lxc-start`` in that namespace and
enslaved to the bridge there; nothing is created in the machine's own namespace. LXC's command
sockets are abstract unix sockets, which belong to a network namespace, so lxc-info, lxc-attach
and lxc-stop must run in the same one: a container started in another namespace looks STOPPED.

Files of container VMID, under ``lxcpath/VMID/``:

``config``               the LXC config, rendered from ``proximity.json`` on every change
``proximity.json``       the Proxmox view: hostname, net0, memory, cores (what status returns)
``rootfs/``              the directory rootfs
``lxc.log``              lxc-start's log (warnings and errors)
``proximity-snapshots/NAME/``  a snapshot: a copy of rootfs/ and proximity.json
``.proximity-creating``  while ``create`` builds it: the pid and start time of the process doing so

A directory without ``proximity.json`` is a container being built, or one whose build or
destroy was interrupted: :meth:`LxcBackend.strays` tells these apart by the marker's process.

Containers run as root (privileged). On a real Proxmox host, unprivileged containers are
Proxmox's business (the proxmox backend asks for ``unprivileged=1``); this backend is for the
sandbox and development. AppArmor is set to ``unconfined`` (this backend generates no profile).
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import ipaddress
import json
import logging
import math
import os
import random
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from proximity.containers.base import BackendError, Container, ContainerNotFound, ContainerSpec, Net0
from proximity.errors import HostError
from proximity.host import ETC_NETNS, NETNS_RUN_DIR, CommandError, Host, Result, wait_for
from proximity.owner import Owner
from proximity.revert import Reverter
from proximity.settings import is_dns_name

log = logging.getLogger(__name__)

FIRST_VMID = 100
LAST_VMID = 999_999_999
CONFIG = "config"
META = "proximity.json"
ROOTFS = "rootfs"
START_LOG = "lxc.log"
SNAPSHOTS = "proximity-snapshots"
CREATING = ".proximity-creating"
NET_ENV = "etc/proximity/net0.env"
INIT_LOG = "var/log/ct-init.log"
PATH_IN_CT = "/usr/sbin:/usr/bin:/sbin:/bin"
CGROUP_ROOT = Path("/sys/fs/cgroup")
SECCOMP_PROFILE = Path("/usr/share/lxc/config/common.seccomp")

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

_IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_MAC_RE = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")
_SNAPSHOT_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{1,39}")  # Proxmox: 2-40 chars
_NET0_KEYS = {"name", "bridge", "hwaddr", "ip", "gw", "ip6", "gw6", "mtu", "firewall", "rate", "tag",
              "trunks", "type", "link_down"}
_DEVICES = [  # the devices LXC's common.conf allows: null, zero, full, tty, console, ptmx, random, urandom, pts, fuse
    "c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm",
    "c 1:8 rwm", "c 1:9 rwm", "c 136:* rwm", "c 10:229 rwm",
]
_DROP_CAPS = "mac_admin mac_override sys_time sys_module sys_rawio"


# --------------------------------------------------------------------------- helpers


def cgroup_layout() -> str:
    """``unified`` (cgroup2 only, Proxmox 7+), ``legacy`` (v1 or hybrid: memory on v1) or ``none``."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return "unified"
    if (CGROUP_ROOT / "memory" / "memory.limit_in_bytes").exists():
        return "legacy"
    return "none"


def random_mac() -> str:
    """A random unicast, locally administered MAC (as Proxmox generates for a new net0)."""
    octets = [random.randrange(256) for _ in range(6)]
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{o:02X}" for o in octets)


def _cpu_list(cores: int) -> str:
    """The first ``cores`` CPUs this process may use, as a cpuset list (``0-1``, ``0,2``)."""
    cpus = sorted(os.sched_getaffinity(0))[: max(1, cores)]
    ranges: list[list[int]] = []
    for cpu in cpus:
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges)


def _data_file(name: str) -> bytes:
    return resources.files("proximity").joinpath("data", name).read_bytes()


def _start_errors(logfile: Path, offset: int) -> str:
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


def parse_net0(value: str) -> Net0:
    """Parse and check a Proxmox ``net0`` string for this backend; BackendError names the bad part."""
    net = Net0.parse(value)
    opts = net.options
    unknown = sorted(set(opts) - _NET0_KEYS)
    if unknown:
        raise BackendError(f"net0 {value!r}: unknown option(s) {', '.join(unknown)}; "
                           f"known are {', '.join(sorted(_NET0_KEYS))}")
    if not opts.get("bridge"):
        raise BackendError(f"net0 {value!r} names no bridge: add bridge=NAME (Proximity's bridge, or vmbr0)")
    for key in ("bridge", "name"):
        if key in opts and not _IFNAME_RE.fullmatch(opts[key]):
            raise BackendError(f"net0 {key}={opts[key]!r} is not an interface name (1-15 of A-Z a-z 0-9 _ . -)")
    if opts.get("type", "veth") != "veth":
        raise BackendError(f"net0 type={opts['type']!r}: LXC containers only have type=veth")
    mac = opts.get("hwaddr")
    if mac is not None and (not _MAC_RE.fullmatch(mac) or int(mac[:2], 16) & 1 or mac.replace(":", "") == "0" * 12):
        raise BackendError(f"net0 hwaddr={mac!r} is not a unicast MAC address; use e.g. {random_mac()}")
    ip = opts.get("ip")
    if ip is not None and ip not in ("dhcp", "manual"):
        if "/" not in ip:
            raise BackendError(f"net0 ip={ip!r} needs a prefix length (ip=198.51.100.50/24), or use ip=dhcp")
        try:
            iface = ipaddress.IPv4Interface(ip)
        except ValueError as exc:
            raise BackendError(f"net0 ip={ip!r} is not an IPv4 address with prefix: {exc}") from None
        gw = opts.get("gw")
        if gw is not None:
            try:
                ipaddress.IPv4Address(gw)
            except ValueError:
                raise BackendError(f"net0 gw={gw!r} is not an IPv4 address") from None
            if ipaddress.IPv4Address(gw) == iface.ip:
                raise BackendError(f"net0 gw={gw} is the container's own address")
    elif "gw" in opts:
        raise BackendError(f"net0 gw={opts['gw']} only goes with a static ip=CIDR (not ip={ip})")
    ip6 = opts.get("ip6")
    if ip6 is not None and ip6 not in ("dhcp", "auto", "manual"):
        try:
            ipaddress.IPv6Interface(ip6)
        except ValueError as exc:
            raise BackendError(f"net0 ip6={ip6!r} is not an IPv6 address with prefix: {exc}") from None
        if "/" not in ip6:
            raise BackendError(f"net0 ip6={ip6!r} needs a prefix length")
    if "gw6" in opts:
        try:
            ipaddress.IPv6Address(opts["gw6"])
        except ValueError:
            raise BackendError(f"net0 gw6={opts['gw6']!r} is not an IPv6 address") from None
    if "mtu" in opts and not (opts["mtu"].isdigit() and 576 <= int(opts["mtu"]) <= 65535):
        raise BackendError(f"net0 mtu={opts['mtu']!r} must be a number from 576 to 65535")
    return net


# --------------------------------------------------------------------------- the backend


class LxcBackend:
    """Local LXC containers under ``lxcpath``, run in network namespace ``netns`` (None: this machine)."""

    name = "lxc"

    def __init__(self, netns: str | None, lxcpath: Path | str, domain: str = "prox.local",
                 command_timeout: float = 30.0):
        if netns is not None and (not netns or "/" in netns or netns in (".", "..")):
            raise BackendError(f"invalid network namespace name {netns!r}")
        self.netns = netns
        self.lxcpath = Path(lxcpath).absolute()
        self.domain = domain
        self.command_timeout = command_timeout
        self.cgroups = cgroup_layout()
        self._busybox_files: list[tuple[Path, str]] | None = None  # (source, path in rootfs)
        self._applets: list[str] | None = None

    # -- commands ------------------------------------------------------------------
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

    # -- files ---------------------------------------------------------------------
    def _dir(self, vmid: int) -> Path:
        return self.lxcpath / str(int(vmid))

    def _load(self, vmid: int) -> dict[str, Any]:
        path = self._dir(vmid) / META
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ContainerNotFound(f"CT {vmid} does not exist (no {path})", fix="see `proximity ct list`") from None
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot read {path}: {exc}; destroy CT {vmid} and create it again") from None
        if not isinstance(data, dict) or not {"hostname", "net0"} <= data.keys():
            raise BackendError(f"{path} is incomplete; destroy CT {vmid} and create it again")
        return data

    def _save(self, vmid: int, data: dict[str, Any]) -> None:
        Host().write_text(self._dir(vmid) / META, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def _ids(self) -> list[int]:
        if not self.lxcpath.is_dir():
            return []
        return sorted(int(p.name) for p in self.lxcpath.iterdir()
                      if p.name.isdigit() and not p.name.startswith("0") and (p / META).is_file())

    # -- the rootfs ----------------------------------------------------------------
    def _busybox(self) -> list[tuple[Path, str]]:
        """busybox and, unless it is static, the shared libraries it loads (from ldd)."""
        if self._busybox_files is not None:
            return self._busybox_files
        found = shutil.which("busybox") or next(
            (p for p in ("/bin/busybox", "/usr/bin/busybox") if os.access(p, os.X_OK)), None)
        if not found:
            raise BackendError("busybox is not installed: 'apt-get install busybox' (or busybox-static); "
                               "the local containers are built from it")
        busybox = Path(found).resolve()
        files = [(busybox, "bin/busybox")]
        proc = self._run(["ldd", str(busybox)], check=False, in_ns=False)
        if proc.returncode == 0:  # dynamic: copy what the loader needs, at the same paths
            for line in proc.stdout.splitlines():
                m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
                if m:
                    files.append((Path(m.group(1)).resolve(), m.group(1).lstrip("/")))
        elif "not a dynamic executable" not in (proc.stdout + proc.stderr):
            raise BackendError(f"cannot tell which libraries {busybox} needs ('ldd {busybox}': "
                               f"{(proc.stderr or proc.stdout).strip()}); install busybox-static instead")
        self._busybox_files = files
        return files

    def _applet_names(self) -> list[str]:
        if self._applets is None:
            busybox = str(self._busybox()[0][0])
            out = self._run([busybox, "--list"], in_ns=False).stdout.split()
            self._applets = sorted({a for a in out if re.fullmatch(r"[A-Za-z0-9_.\[-]+", a)} - {"busybox"})
        return self._applets

    def _build_rootfs(self, rootfs: Path, hostname: str) -> None:
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "usr/share/udhcpc", "etc/proximity", "proc", "sys",
                  "dev", "tmp", "run", "var/log", "root", "www"):
            (rootfs / d).mkdir(parents=True, exist_ok=True)
        (rootfs / "tmp").chmod(0o1777)
        (rootfs / "root").chmod(0o700)
        for source, target in self._busybox():
            dest = rootfs / target
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
        for applet in self._applet_names():
            link = rootfs / "bin" / applet
            if not link.exists() and not link.is_symlink():
                link.symlink_to("busybox")
        init = rootfs / "sbin/init"
        if init.is_symlink():
            init.unlink()
        init.write_bytes(_data_file("ct-init.sh"))
        init.chmod(0o755)
        script = rootfs / "usr/share/udhcpc/default.script"
        script.write_bytes(_data_file("udhcpc.script"))
        script.chmod(0o755)
        etc = rootfs / "etc"
        (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        (etc / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
        (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
        (etc / "shadow").chmod(0o600)
        (etc / "resolv.conf").write_text("")
        (etc / "nsswitch.conf").write_text("hosts: files dns\n")
        self._write_identity(rootfs, hostname)

    def _write_identity(self, rootfs: Path, hostname: str) -> None:
        short = hostname.split(".")[0]
        fqdn = hostname if "." in hostname else f"{hostname}.{self.domain}"
        (rootfs / "etc/hostname").write_text(f"{hostname}\n")
        (rootfs / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{fqdn} {short}\n"
                                          "::1\tlocalhost ip6-localhost ip6-loopback\n")

    def _host_resolv_conf(self) -> str:
        """The nameserver/search lines the host (namespace) uses: what Proxmox gives a static CT."""
        paths = ([ETC_NETNS / self.netns / "resolv.conf"] if self.netns else []) + [Path("/etc/resolv.conf")]
        for path in paths:
            try:
                text = path.read_text()
            except OSError:
                continue
            lines = [ln for ln in text.splitlines() if ln.split()[:1] in (["nameserver"], ["search"], ["domain"])]
            return "\n".join(lines) + ("\n" if lines else "")
        return ""

    def _write_net_env(self, vmid: int, net: Net0) -> None:
        rootfs = self._dir(vmid) / ROOTFS
        env = {"NET0_IFACE": net.get("name") or "eth0", "NET0_IP": net.get("ip") or "manual",
               "NET0_GW": net.get("gw") or ""}
        path = rootfs / NET_ENV
        path.parent.mkdir(parents=True, exist_ok=True)
        Host().write_text(path, "# written by proximity from net0; read by /sbin/init\n"
                      + "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
        if env["NET0_IP"] not in ("dhcp", "manual"):
            Host().write_text(rootfs / "etc/resolv.conf", self._host_resolv_conf())

    # -- the LXC config ------------------------------------------------------------
    def _render_config(self, vmid: int, data: dict[str, Any]) -> str:
        net = Net0.parse(data["net0"])
        rootfs = self._dir(vmid) / ROOTFS
        v1 = self.cgroups == "legacy"
        lines = [
            f"# CT {vmid} ({data['hostname']}): written by proximity from {META}; changes here are overwritten",
            f"lxc.uts.name = {data['hostname']}",
            f"lxc.rootfs.path = dir:{rootfs}",
            "lxc.init.cmd = /sbin/init",
            "lxc.signal.halt = SIGTERM",
            "lxc.apparmor.profile = unconfined",
            "lxc.autodev = 1",
            "lxc.tty.max = 0",
            "lxc.pty.max = 16",
            "lxc.mount.auto = proc:mixed sys:mixed",
            f"lxc.cap.drop = {_DROP_CAPS}",
        ]
        if SECCOMP_PROFILE.is_file():
            lines.append(f"lxc.seccomp.profile = {SECCOMP_PROFILE}")
        if self.cgroups != "none":
            prefix = "lxc.cgroup" if v1 else "lxc.cgroup2"
            lines.append(f"{prefix}.devices.deny = a")
            lines += [f"{prefix}.devices.allow = {rule}" for rule in _DEVICES]
            controllers = self._v2_controllers()
            memory = int(data.get("memory") or 0)
            if memory and (v1 or "memory" in controllers):
                key = "memory.limit_in_bytes" if v1 else "memory.max"
                lines.append(f"{prefix}.{key} = {memory * 1024 * 1024}")
            cores = int(data.get("cores") or 0)
            if cores and (v1 or "cpuset" in controllers):
                lines.append(f"{prefix}.cpuset.cpus = {_cpu_list(cores)}")
        lines += [
            "lxc.net.0.type = veth",
            f"lxc.net.0.link = {net.get('bridge')}",
            f"lxc.net.0.name = {net.get('name') or 'eth0'}",
            f"lxc.net.0.hwaddr = {(net.get('hwaddr') or '').lower()}",
            f"lxc.net.0.veth.pair = veth{vmid}i0",
        ]
        if net.get("link_down") != "1":
            lines.append("lxc.net.0.flags = up")
        if net.get("mtu"):
            lines.append(f"lxc.net.0.mtu = {net.get('mtu')}")
        ip = net.get("ip")
        if ip and ip not in ("dhcp", "manual"):
            broadcast = ipaddress.IPv4Interface(ip).network.broadcast_address  # LXC guesses it wrong
            lines.append(f"lxc.net.0.ipv4.address = {ip} {broadcast}")
            if net.get("gw"):
                lines.append(f"lxc.net.0.ipv4.gateway = {net.get('gw')}")
        ip6 = net.get("ip6")
        if ip6 and ip6 not in ("dhcp", "auto", "manual"):
            lines.append(f"lxc.net.0.ipv6.address = {ip6}")
            if net.get("gw6"):
                lines.append(f"lxc.net.0.ipv6.gateway = {net.get('gw6')}")
        return "\n".join(lines) + "\n"

    def _v2_controllers(self) -> set[str]:
        try:
            return set((CGROUP_ROOT / "cgroup.controllers").read_text().split())
        except OSError:
            return set()

    def _write_config(self, vmid: int, data: dict[str, Any]) -> None:
        Host().write_text(self._dir(vmid) / CONFIG, self._render_config(vmid, data))

    # -- state ---------------------------------------------------------------------
    def _state(self, vmid: int) -> str:
        """LXC's state (RUNNING, STOPPED, STARTING, ...), asked in the container's namespace."""
        proc = self._lxc("lxc-info", vmid, "-s", "-H", timeout=10)
        return proc.stdout.strip().upper() or "STOPPED"

    def _running(self, vmid: int) -> bool:
        return self._state(vmid) != "STOPPED"

    def _container(self, vmid: int, data: dict[str, Any]) -> Container:
        state = "stopped" if self._state(vmid) == "STOPPED" else "running"
        return Container(vmid=int(vmid), hostname=data["hostname"], state=state, net0=data["net0"],
                         backend=self.name)

    # -- the interface -------------------------------------------------------------
    def next_id(self) -> int:
        used = set(self._ids())
        if self.lxcpath.is_dir():
            used |= {int(p.name) for p in self.lxcpath.iterdir() if p.name.isdigit()}
        vmid = FIRST_VMID
        while vmid in used:
            vmid += 1
        return vmid

    def create(self, spec: ContainerSpec) -> Container:
        if not is_dns_name(spec.hostname):  # as Proxmox: FQDNs too (Proximity's own are checked before)
            raise BackendError(f"hostname {spec.hostname!r} is not a valid DNS name (RFC 1123: letters, digits "
                               "and '-', labels of at most 63 characters); pick a name like 'nginx-01'")
        if spec.memory < 16:
            raise BackendError(f"memory {spec.memory} MiB is too small: give at least 16")
        if spec.cores < 1:
            raise BackendError(f"cores {spec.cores}: give at least 1")
        if spec.vmid is not None and not FIRST_VMID <= spec.vmid <= LAST_VMID:
            raise BackendError(f"vmid {spec.vmid} is out of range: use {FIRST_VMID} to {LAST_VMID}")
        net = parse_net0(spec.net0)
        if not net.get("hwaddr"):  # Proxmox generates one and stores it in net0
            net = Net0({**net.options, "hwaddr": random_mac()})
        self._busybox()  # fail before anything is created
        try:
            self.lxcpath.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cannot create {self.lxcpath}: {exc}") from None

        vmid = spec.vmid
        with self._claim_lock():  # the id and its owner marker appear together (see strays)
            for _attempt in range(100):
                candidate = vmid if vmid is not None else self.next_id()
                try:
                    self._dir(candidate).mkdir()  # atomic claim of the id
                    vmid = candidate
                    break
                except FileExistsError:
                    if vmid is not None:
                        raise BackendError(f"CT {vmid} already exists in {self.lxcpath}; pick another vmid "
                                           "or destroy it first") from None
            else:
                raise BackendError(f"could not find a free vmid in {self.lxcpath}")
            assert vmid is not None
            me = Owner.me()
            Host().write_text(self._dir(vmid) / CREATING, json.dumps({"pid": me.pid, "start": me.start}) + "\n")

        data = {
            "vmid": vmid, "hostname": spec.hostname, "net0": str(net), "memory": spec.memory,
            "cores": spec.cores, "template": spec.template, "netns": self.netns,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        try:
            with Reverter() as revert:
                revert.add(f"remove the half-built {self._dir(vmid)}", lambda: Host().remove_tree(self._dir(vmid)))
                self._build_rootfs(self._dir(vmid) / ROOTFS, spec.hostname)
                self._write_net_env(vmid, net)
                self._write_config(vmid, data)
                self._save(vmid, data)  # last: a container without it is half-made and not listed
                (self._dir(vmid) / CREATING).unlink()
                revert.success()
        except OSError as exc:
            raise BackendError(f"cannot build CT {vmid} in {self._dir(vmid)}: {exc}") from None
        return self._container(vmid, data)

    def start(self, vmid: int, timeout: float = 30) -> None:
        """Start (a no-op when running) and wait until LXC says RUNNING."""
        data = self._load(vmid)
        if self._running(vmid):
            return
        net = Net0.parse(data["net0"])
        bridge = net.get("bridge") or ""
        probe = ["ip", "-n", self.netns] if self.netns else ["ip"]
        self._in_ns([])  # the namespace must exist
        if self._run([*probe, "-o", "link", "show", "dev", bridge], check=False, in_ns=False).returncode != 0:
            raise BackendError(
                f"cannot start CT {vmid} ({data['hostname']}): bridge {bridge} does not exist in {self._where}; "
                f"if it is Proximity's bridge, set up the network first ('proximity up"
                + (f" --sandbox {self.netns}" if self.netns else "") + f"'), else create {bridge} or set another "
                "bridge in net0"
            )
        veth = f"veth{vmid}i0"
        if self._run([*probe, "-o", "link", "show", "dev", veth], check=False, in_ns=False).returncode == 0:
            raise BackendError(
                f"cannot start CT {vmid} ({data['hostname']}): an interface {veth} exists already in {self._where} "
                f"(another container with id {vmid} runs there, from another lxcpath?); stop that container or "
                "give this one another vmid"
            )
        self._write_config(vmid, data)
        logfile = self._dir(vmid) / START_LOG
        offset = logfile.stat().st_size if logfile.exists() else 0
        proc = self._lxc("lxc-start", vmid, "-d", "-o", str(logfile), "-l", "WARN", timeout=timeout, check=False)
        if proc.returncode != 0 or not wait_for(lambda: self._state(vmid) == "RUNNING", timeout):
            output = (proc.stderr or proc.stdout).strip().splitlines()
            detail = _start_errors(logfile, offset) or " | ".join(output[-3:])
            state = self._state(vmid)
            raise BackendError(
                f"CT {vmid} ({data['hostname']}) did not start (lxc-start exit {proc.returncode}, state {state}): "
                f"{detail or 'no output'}; see {logfile} and {self._dir(vmid) / ROOTFS / INIT_LOG}"
            )

    def shutdown(self, vmid: int, timeout: float = 30) -> None:
        """Clean shutdown (SIGTERM to init); BackendError if it is still running after ``timeout``."""
        data = self._load(vmid)
        if not self._running(vmid):
            return
        seconds = max(1, math.ceil(timeout))
        proc = self._lxc("lxc-stop", vmid, "-t", str(seconds), "--nokill", timeout=seconds + 15, check=False)
        if self._running(vmid):
            detail = (proc.stderr or proc.stdout).strip()
            raise BackendError(
                f"CT {vmid} ({data['hostname']}) did not shut down within {seconds} s"
                + (f" ({detail})" if detail else "") + "; stop it forcibly (stop) instead"
            )

    def stop(self, vmid: int) -> None:
        """Hard stop (kills init); a no-op when stopped."""
        self._load(vmid)
        if not self._running(vmid):
            return
        self._lxc("lxc-stop", vmid, "-k", timeout=30)
        if not wait_for(lambda: not self._running(vmid), 10):
            raise BackendError(f"CT {vmid} is still running after 'lxc-stop -k'; see {self._dir(vmid) / START_LOG}")

    def destroy(self, vmid: int) -> None:
        """Stop if running, then remove the container with its snapshots."""
        path = self._dir(vmid)
        if not path.is_dir():
            raise ContainerNotFound(f"CT {vmid} does not exist in {self.lxcpath}", fix="see `proximity ct list`")
        if (path / CONFIG).is_file():
            if self._running(vmid):
                self.stop(vmid)
            shutil.rmtree(path / SNAPSHOTS, ignore_errors=True)
            self._lxc("lxc-destroy", vmid, timeout=60,
                      fix=f"remove {path} by hand once the container is stopped")
        if path.exists():  # half-created, or lxc-destroy left files of ours
            shutil.rmtree(path)

    def status(self, vmid: int) -> Container:
        return self._container(vmid, self._load(vmid))

    def strays(self) -> builtins.list[Path]:
        """Directories of containers whose build or destroy was interrupted (no process is on them).

        Each can go with ``destroy(int(path.name))``. Reads only: safe in a dry run.
        """
        if not self.lxcpath.is_dir():
            return []
        found = []
        with self._claim_lock():
            for path in sorted(self.lxcpath.iterdir()):
                if not (path.name.isdigit() and path.is_dir()) or (path / META).exists():
                    continue
                try:
                    owner = Owner(**json.loads((path / CREATING).read_text()))
                except (OSError, ValueError, TypeError):
                    owner = None  # no marker: a destroy was interrupted (or the marker is damaged)
                if owner is None or not owner.alive():
                    found.append(path)
        return found

    @contextlib.contextmanager
    def _claim_lock(self) -> Iterator[None]:
        """Held while a new id is claimed and while strays are looked for (a lock on lxcpath itself)."""
        fd = os.open(self.lxcpath, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def list(self) -> list[Container]:
        result = []
        for vmid in self._ids():
            try:
                result.append(self._container(vmid, self._load(vmid)))
            except BackendError as exc:
                log.warning("skipping CT %s: %s", vmid, exc)
        return result

    def get_net0(self, vmid: int) -> str:
        return str(self._load(vmid)["net0"])

    def set_net0(self, vmid: int, value: str) -> None:
        """Change net0 of a stopped container (a running one would need Proxmox's pending changes)."""
        data = self._load(vmid)
        if self._running(vmid):
            raise BackendError(
                f"CT {vmid} ({data['hostname']}) is running: net0 can only change while it is stopped "
                "(Proxmox would keep it as a pending change); shut it down first"
            )
        net = parse_net0(value)
        if not net.get("hwaddr"):  # keep the container's MAC (and so its DHCP reservation)
            old = Net0.parse(data["net0"]).get("hwaddr") or random_mac()
            net = Net0({**net.options, "hwaddr": old})
        data["net0"] = str(net)
        self._write_net_env(vmid, net)
        self._write_config(vmid, data)
        self._save(vmid, data)

    def can_snapshot(self, vmid: int) -> bool:
        return True  # a snapshot is a copy of the rootfs directory

    def snapshot(self, vmid: int, name: str) -> None:
        """Copy the rootfs and the Proxmox view (net0 included) to ``proximity-snapshots/NAME``."""
        data = self._load(vmid)
        if not _SNAPSHOT_RE.fullmatch(name or ""):
            raise BackendError(f"snapshot name {name!r} is invalid: 2-40 characters of letters, digits, '_' "
                               "and '-', starting with a letter")
        target = self._dir(vmid) / SNAPSHOTS / name
        if target.exists():
            raise BackendError(f"CT {vmid} already has a snapshot {name!r}; delete it first or pick another name")
        tmp = target.with_name(f".{name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            shutil.copytree(self._dir(vmid) / ROOTFS, tmp / ROOTFS, symlinks=True)
            snap = {**data, "snapshot": name, "snapshot_time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            Host().write_text(tmp / META, json.dumps(snap, indent=2, sort_keys=True) + "\n")
            os.rename(tmp, target)
        except (OSError, HostError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise BackendError(f"cannot snapshot CT {vmid} as {name!r}: {exc}") from None

    def snapshots(self, vmid: int) -> builtins.list[str]:
        self._load(vmid)
        base = self._dir(vmid) / SNAPSHOTS
        return sorted(p.name for p in base.iterdir() if not p.name.startswith(".")) if base.is_dir() else []

    def rollback(self, vmid: int, name: str) -> None:
        """Restore rootfs, hostname, net0, memory and cores; a running container is stopped first (as Proxmox)."""
        data = self._load(vmid)
        snap_dir = self._dir(vmid) / SNAPSHOTS / name
        if not (snap_dir / META).is_file():
            have = ", ".join(self.snapshots(vmid)) or "none"
            raise BackendError(f"CT {vmid} has no snapshot {name!r} (snapshots: {have})")
        snap = json.loads((snap_dir / META).read_text())
        if self._running(vmid):
            self.stop(vmid)
        ct_dir = self._dir(vmid)
        fresh, old = ct_dir / ".rootfs.rollback", ct_dir / ".rootfs.old"
        for leftover in (fresh, old):
            shutil.rmtree(leftover, ignore_errors=True)
        try:
            shutil.copytree(snap_dir / ROOTFS, fresh, symlinks=True)
            os.rename(ct_dir / ROOTFS, old)
            os.rename(fresh, ct_dir / ROOTFS)
        except OSError as exc:
            if not (ct_dir / ROOTFS).exists() and old.exists():
                os.rename(old, ct_dir / ROOTFS)
            shutil.rmtree(fresh, ignore_errors=True)
            raise BackendError(f"cannot roll CT {vmid} back to {name!r}: {exc}") from None
        shutil.rmtree(old, ignore_errors=True)
        restored = {k: v for k, v in snap.items() if k not in ("snapshot", "snapshot_time")}
        restored["vmid"] = data.get("vmid", vmid)
        self._write_net_env(vmid, Net0.parse(restored["net0"]))
        self._write_config(vmid, restored)
        self._save(vmid, restored)

    def delete_snapshot(self, vmid: int, name: str) -> None:
        self._load(vmid)
        snap_dir = self._dir(vmid) / SNAPSHOTS / name
        if not _SNAPSHOT_RE.fullmatch(name or "") or not snap_dir.is_dir():
            have = ", ".join(self.snapshots(vmid)) or "none"
            raise BackendError(f"CT {vmid} has no snapshot {name!r} (snapshots: {have})")
        shutil.rmtree(snap_dir)

    # -- extras --------------------------------------------------------------------
    def container_pid(self, vmid: int) -> int | None:
        """The host pid of the container's init (read /proc/PID/root/... through it), None when stopped."""
        self._load(vmid)
        proc = self._lxc("lxc-info", vmid, "-p", "-H", timeout=10, check=False)
        text = proc.stdout.strip()
        return int(text) if proc.returncode == 0 and text.isdigit() else None

    def exec(self, vmid: int, argv: builtins.list[str], timeout: float = 30,
             check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the running container (lxc-attach, clean environment).

        The command is wrapped in busybox ``timeout -s KILL`` inside the container, so nothing is left
        running there when ``timeout`` passes (BackendError). Its exit status is returned as is, unless
        ``check`` (BackendError on a non-zero status).
        """
        if not argv:
            raise BackendError("exec needs a command")
        data = self._load(vmid)
        if not self._running(vmid):
            raise BackendError(f"CT {vmid} ({data['hostname']}) is not running: start it first")
        seconds = max(1, math.ceil(timeout))
        cmd = ["lxc-attach", "-P", str(self.lxcpath), "-n", str(vmid), "--clear-env",
               "--set-var", f"PATH={PATH_IN_CT}", "--set-var", "HOME=/root", "--",
               "timeout", "-s", "KILL", str(seconds), *argv]
        started = time.monotonic()
        proc = self._run(cmd, timeout=seconds + 10, check=False)
        elapsed = time.monotonic() - started
        if proc.returncode != 0 and "lxc-attach: " in proc.stderr:
            raise BackendError(f"cannot run {shlex.join(argv)!r} in CT {vmid}: {proc.stderr.strip()}")
        if proc.returncode != 0 and elapsed >= seconds:
            raise BackendError(f"{shlex.join(argv)!r} in CT {vmid} timed out after {seconds} s (killed)")
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip() or "no output"
            raise BackendError(f"{shlex.join(argv)!r} failed in CT {vmid} (exit {proc.returncode}): {detail}")
        return subprocess.CompletedProcess(argv, proc.returncode, proc.stdout, proc.stderr)


__all__ = ["LxcBackend", "cgroup_layout", "parse_net0", "random_mac"]
