"""`proximity doctor`: every troubleshooting check, each failure with its exact fix.

This module sits above the network and the container layers, so the network layer never
imports a container backend. It runs the network's own checks (proximity.network.doctor)
and adds those that need both: each reachable container's resolv.conf, and orphans
(reservations with no container, containers on the bridge with no reservation, half-built
container directories; `proximity gc` repairs them).
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from pathlib import Path

from proximity.containers.lxc import LxcBackend
from proximity.containers.manager import ContainerManager
from proximity.containers.recovery import ADOPT
from proximity.errors import ProximityError
from proximity.network.doctor import network_checks
from proximity.network.reconciler import Check, NetworkManager


def run_doctor(network: NetworkManager, sandbox=None,
               containers: Callable[[], ContainerManager] | None = None) -> list[Check]:
    """All checks. ``containers`` builds the container manager (default: the settings' backend)."""
    name = sandbox.name if sandbox is not None else None
    return [*network_checks(network, name), *_resolv_conf_checks(network, sandbox),
            *_orphan_checks(network, name, containers)]


def _orphan_checks(network: NetworkManager, sandbox_name: str | None,
                   containers: Callable[[], ContainerManager] | None) -> list[Check]:
    gc = "proximity gc" + (f" --sandbox {sandbox_name}" if sandbox_name else "")
    try:
        if containers is None:
            from proximity.containers.factory import backend_for  # imports proxmoxer only when needed

            manager = ContainerManager(network, backend_for(network.settings))
        else:
            manager = containers()
        repairs = manager.plan_repairs()
    except ProximityError as exc:
        return [Check("orphans", False, f"cannot look for orphans: {exc}", "see the message", warning=True)]
    if not repairs:
        return [Check("orphans", True, f"every reservation has its container and every container on "
                                       f"{network.settings.bridge} its reservation; no half-built container")]
    return [Check(f"orphan: {repair.subject}", False, repair.orphan, f"{gc}  (it would {repair.describe()})",
                  warning=repair.kind == ADOPT) for repair in repairs]


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
                if pid and f"bridge={manager.settings.bridge}" in container.net0:
                    files.append((container.hostname, Path(f"/proc/{pid}/root/etc/resolv.conf")))
    else:
        for config in sorted(glob.glob("/var/lib/lxc/*/config")):
            if f"link = {manager.settings.bridge}" not in Path(config).read_text(errors="replace"):
                continue
            name = Path(config).parent.name
            result = manager.host.query(["lxc-info", "-n", name, "-p", "-H"])
            if result.ok and result.stdout.strip().isdigit():
                files.append((name, Path(f"/proc/{result.stdout.strip()}/root/etc/resolv.conf")))
    checks = []
    for name, path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        ok = any(line.split() == want.split() for line in text.splitlines())
        checks.append(Check(f"resolv.conf of {name}", ok,
                            f"{path} " + ("uses" if ok else "does not use") + f" {manager.settings.gateway.ip}",
                            "renew the container's DHCP lease (or restart it)"))
    return checks
