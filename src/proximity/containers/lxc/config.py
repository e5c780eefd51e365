"""The LXC config of a local container, rendered from its Proxmox view (``proximity.json``): pure but for
reading which cgroup controllers this machine has."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

from proximity.containers.base import Net0

CGROUP_ROOT = Path("/sys/fs/cgroup")
SECCOMP_PROFILE = Path("/usr/share/lxc/config/common.seccomp")
META = "proximity.json"
_DEVICES = [  # the devices LXC's common.conf allows: null, zero, full, tty, console, ptmx, random, urandom, pts, fuse
    "c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm",
    "c 1:8 rwm", "c 1:9 rwm", "c 136:* rwm", "c 10:229 rwm",
]
_DROP_CAPS = "mac_admin mac_override sys_time sys_module sys_rawio"
_DROP_CAPS = "mac_admin mac_override sys_time sys_module sys_rawio"


def cgroup_layout() -> str:
    """``unified`` (cgroup2 only, Proxmox 7+), ``legacy`` (v1 or hybrid: memory on v1) or ``none``."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return "unified"
    if (CGROUP_ROOT / "memory" / "memory.limit_in_bytes").exists():
        return "legacy"
    return "none"


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


def render_config(vmid: int, data: dict[str, Any], rootfs: Path, cgroups: str) -> str:
    """The LXC config of CT ``vmid`` from its Proxmox view ``data`` (cgroups: :func:`cgroup_layout`)."""
    net = Net0.parse(data["net0"])
    v1 = cgroups == "legacy"
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
    if cgroups != "none":
        prefix = "lxc.cgroup" if v1 else "lxc.cgroup2"
        lines.append(f"{prefix}.devices.deny = a")
        lines += [f"{prefix}.devices.allow = {rule}" for rule in _DEVICES]
        controllers = _v2_controllers()
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

def _v2_controllers() -> set[str]:
    try:
        return set((CGROUP_ROOT / "cgroup.controllers").read_text().split())
    except OSError:
        return set()
