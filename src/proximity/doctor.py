"""`proximity doctor`: every troubleshooting check, each failure with its exact fix.

This module sits above the network and the container layers, so the network layer never
imports a container backend. It runs the network's own checks (proximity.network.doctor)
and adds those that need both: each reachable container's resolv.conf, orphans
(reservations with no container, containers on the bridge with no reservation, half-built
container directories; `proximity gc` repairs them), and Proxmox guest firewalls that block
a container's DHCP (containers/guest_firewall.py).
"""

from __future__ import annotations

import glob
import re
from collections.abc import Callable
from pathlib import Path

from proximity.containers import guest_firewall
from proximity.containers.base import Net0
from proximity.containers.lxc import LxcBackend
from proximity.containers.manager import ContainerManager
from proximity.containers.recovery import ADOPT
from proximity.errors import ProximityError
from proximity.network.doctor import network_checks
from proximity.network.health import Check
from proximity.network.reconciler import NetworkManager

PVE_LXC_DIR = Path("/etc/pve/lxc")  # Proxmox's own container configs, VMID.conf (pmxcfs)
NET_KEY = re.compile(r"net\d+")


def run_doctor(network: NetworkManager, sandbox=None,
               containers: Callable[[], ContainerManager] | None = None) -> list[Check]:
    """All checks. ``containers`` builds the container manager (default: the settings' backend)."""
    try:
        manager: ContainerManager | ProximityError = _manager(network, containers)
    except ProximityError as exc:
        manager = exc
    return [*network_checks(network), *_resolv_conf_checks(network, sandbox),
            *_orphan_checks(network, manager), *_guest_firewall_checks(network, manager)]


def doctor_dict(check: Check) -> dict:
    """A check as doctor's JSON and the API give it: the status shape, with the older keys kept."""
    return {**check.as_dict(), "detail": check.observed, "warning": check.severity == "warning"}


def pve_config(text: str) -> dict[str, str]:
    """The current section of a Proxmox guest config (``key: value`` lines; snapshots and pending
    changes follow in ``[sections]`` and are not the running config)."""
    config: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("["):
            break
        key, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            config[key.strip()] = value.strip()
    return config


def on_bridge(config: dict[str, str], bridge: str) -> bool:
    """Whether any of the guest's NICs (net0, net1, ...) is on ``bridge`` (exactly: not ``prox-net2``)."""
    for key, value in config.items():
        if NET_KEY.fullmatch(key):
            try:
                if Net0.parse(value).get("bridge") == bridge:
                    return True
            except ProximityError:  # a damaged property string is not on our bridge
                continue
    return False


def pve_containers_on_bridge(bridge: str, conf_dir: Path = PVE_LXC_DIR) -> list[tuple[int, str]]:
    """(vmid, hostname) of each Proxmox container with a NIC on ``bridge``, from Proxmox's own configs."""
    found = []
    for path in sorted(conf_dir.glob("*.conf"), key=lambda p: (len(p.stem), p.stem)):
        if not path.stem.isdigit():
            continue
        try:
            config = pve_config(path.read_text(errors="replace"))
        except OSError:
            continue
        if on_bridge(config, bridge):
            found.append((int(path.stem), config.get("hostname") or f"CT {path.stem}"))
    return found


def _manager(network: NetworkManager, containers: Callable[[], ContainerManager] | None) -> ContainerManager:
    if containers is not None:
        return containers()
    from proximity.containers.factory import backend_for  # imports proxmoxer only when needed

    return ContainerManager(network, backend_for(network.settings))


def _orphan_checks(network: NetworkManager, manager: ContainerManager | ProximityError) -> list[Check]:
    gc = network.settings.command("gc")
    try:
        if isinstance(manager, ProximityError):
            raise manager
        repairs = manager.plan_repairs()
    except ProximityError as exc:
        return [Check("orphans", "orphans", False, f"cannot look for orphans: {exc}", "see the message", "warning")]
    if not repairs:
        return [Check("orphans", "orphans", True, f"every reservation has its container and every container on "
                                                  f"{network.settings.bridge} its reservation; no half-built container")]
    return [Check("orphan", f"orphan: {repair.subject}", False, repair.orphan,
                  f"run `{gc}` (it would {repair.describe()})", "warning" if repair.kind == ADOPT else "error")
            for repair in repairs]


def _resolv_conf_checks(manager: NetworkManager, sandbox) -> list[Check]:
    """Containers we can see should use the gateway as their DNS server."""
    want = f"nameserver {manager.settings.gateway.ip}"
    files: list[tuple[str, Path]] = []
    if sandbox is not None:
        files = [(Path(p).parent.name.removeprefix(f"{sandbox.name}-"), Path(p))
                 for p in sorted(glob.glob(f"/etc/netns/{sandbox.name}-*/resolv.conf"))
                 if not p.startswith(f"/etc/netns/{sandbox.lan_ns}/")]
        lxcpath = sandbox.state_dir / "lxc"
        if lxcpath.is_dir():
            backend = LxcBackend(sandbox.name, lxcpath)
            for container in backend.list():
                pid = backend.container_pid(container.vmid) if container.state == "running" else None
                if pid and on_bridge({"net0": container.net0 or ""}, manager.settings.bridge):
                    files.append((container.hostname, Path(f"/proc/{pid}/root/etc/resolv.conf")))
    else:
        for vmid, name in pve_containers_on_bridge(manager.settings.bridge):
            result = manager.host.query(["lxc-info", "-n", str(vmid), "-p", "-H"])  # Proxmox names LXC by VMID
            if result.ok and result.stdout.strip().isdigit():
                files.append((name, Path(f"/proc/{result.stdout.strip()}/root/etc/resolv.conf")))
    checks = []
    for name, path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        ok = any(line.split() == want.split() for line in text.splitlines())
        checks.append(Check("container_resolv_conf", f"resolv.conf of {name}", ok,
                            f"{path} " + ("uses" if ok else "does not use") + f" {manager.settings.gateway.ip}",
                            "" if ok else "renew the container's DHCP lease (or restart it)"))
    return checks


def _guest_firewall_checks(network: NetworkManager, manager: ContainerManager | ProximityError) -> list[Check]:
    """Containers on the bridge with firewall=1 whose enabled guest firewall blocks DHCP (Proxmox only)."""
    if isinstance(manager, ProximityError) or not hasattr(manager.backend, "guest_firewall"):
        return []  # no backend: the orphan check says why; the lxc backend has no guest firewall
    backend, bridge = manager.backend, network.settings.bridge
    ipv6 = network.settings.ipv6 != "off"
    checks, seen = [], 0
    try:
        containers = backend.list()
    except ProximityError as exc:
        return [Check("guest_firewall", "guest firewalls", False, f"cannot list containers: {exc}", "see the message",
                      "warning")]
    for container in containers:
        try:
            net0 = container.net0 or backend.get_net0(container.vmid)
            if Net0.parse(net0).get("bridge") != bridge or not guest_firewall.applies(backend, net0):
                continue
            seen += 1
            found = guest_firewall.problems(backend.guest_firewall(container.vmid), ipv6)
        except ProximityError as exc:
            checks.append(Check("guest_firewall", f"guest firewall of {container.hostname}", False,
                                f"cannot read CT {container.vmid}'s net0 or firewall options: {exc}",
                                "see the message", "warning"))
            continue
        if found:
            vmid, node = container.vmid, backend.config.node
            fixes = [guest_firewall.dhcp_fix(node, vmid)] if found[0].startswith("DHCP") else []
            if found[-1].startswith("IPv6"):
                fixes.append(f"pvesh set /nodes/{node}/lxc/{vmid}/firewall/options --ndp 1")
            checks.append(Check("guest_firewall_dhcp", f"guest firewall of {container.hostname}", False,
                                f"CT {vmid} ({container.hostname}) has firewall=1 on {bridge} and its guest firewall "
                                f"is enabled, which blocks {' and '.join(found)}: it gets no "
                                + ("DHCP lease" if fixes[0].endswith("--dhcp 1") else "IPv6 address"),
                                " and ".join(f"`{f}`" for f in fixes) + " on the Proxmox host"))
    if not checks:
        checks.append(Check("guest_firewall_dhcp", "guest firewalls", True,
                            f"{seen} container(s) on {bridge} with firewall=1; no enabled guest firewall blocks DHCP"))
    return checks
