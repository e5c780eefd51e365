"""Network-ready time of containers: from the start call to a lease, and to a name a peer resolves.

Proximity's settings (reservation + addn-hosts, dhcp-rapid-commit, no-ping) against the
seed's plain dnsmasq (no reservation, ping check on), on the same sandbox host, same run.
"""

from __future__ import annotations

import subprocess
import sys
import time

from proximity import sandbox as sandboxes
from proximity.containers.base import ContainerSpec
from proximity.containers.lxc import LxcBackend, random_mac
from proximity.containers.manager import ContainerManager
from proximity.host import Host
from proximity.network.reconciler import NetworkManager
from proximity.network.dnsmasq import SupervisedDns
from proximity.settings import load_settings

GATEWAY = "10.10.0.1"


def resolves(ns: str, name: str) -> str | None:
    found = Host(ns).resolve(name, GATEWAY, timeout=0.2, attempts=1)
    return found[0] if found else None


def leased(settings, mac: str) -> str | None:
    text = settings.leases_file.read_text() if settings.leases_file.exists() else ""
    return next((line.split()[2] for line in text.splitlines() if f" {mac} " in line), None)


def measure_start(backend, settings, peer_ns: str, vmid: int, hostname: str, mac: str) -> tuple[float, float]:
    """Seconds from the start call to (lease held, name resolvable from the peer)."""
    start = time.perf_counter()
    backend.start(vmid)
    lease_at = name_at = None
    deadline = start + 30
    while (lease_at is None or name_at is None) and time.perf_counter() < deadline:
        now = time.perf_counter()
        if lease_at is None and leased(settings, mac):
            lease_at = now - start
        if name_at is None and resolves(peer_ns, f"{hostname}.prox.local"):
            name_at = now - start
        time.sleep(0.005)
    return lease_at or float("inf"), name_at or float("inf")


def seed_conf(settings) -> str:
    """The seed's plain dnsmasq: no reservations, no rapid commit, ping check on."""
    from proximity.network import render

    conf = render.dnsmasq_conf(settings)
    drop = ("dhcp-rapid-commit", "no-ping", "dhcp-hostsfile=", "addn-hosts=")
    return "".join(line + "\n" for line in conf.splitlines() if not line.startswith(drop))


def run(count: int = 20) -> list[tuple[str, list[float]]]:
    name = f"bc{int(time.time()) % 10000}"
    sandboxes.destroy(name)
    sb = sandboxes.create(name)
    rows = []
    try:
        subprocess.run([sys.executable, "-m", "proximity", "up", "--sandbox", name], check=True, capture_output=True)
        settings = load_settings(**sb.settings_overrides())
        peer = sandboxes.attach_client(sb, "peer")
        backend = LxcBackend(name, sb.state_dir / "lxc")
        manager = ContainerManager(NetworkManager(settings), backend)

        lease, named = [], []
        for i in range(count):
            info = manager.create(f"app-{i:02d}", start=False)
            lease_s, name_s = measure_start(backend, settings, peer.ns, info.vmid, info.hostname, info.mac)
            lease.append(lease_s)
            named.append(name_s)
        for container in backend.list():
            manager.destroy(str(container.vmid))
        rows += [("Proximity: start → lease", lease), ("Proximity: start → name resolves", named)]

        # Baseline: the seed's settings, on the same host.
        settings.dnsmasq_conf.write_text(seed_conf(settings))
        SupervisedDns(Host(name), settings).restart()
        lease, named = [], []
        for i in range(count):
            mac = random_mac()
            ct = backend.create(ContainerSpec(f"seed-{i:02d}", f"name=eth0,bridge=prox-net,ip=dhcp,firewall=1,hwaddr={mac}"))
            lease_s, name_s = measure_start(backend, settings, peer.ns, ct.vmid, ct.hostname, mac.lower())
            lease.append(lease_s)
            named.append(name_s)
        rows += [("baseline (seed dnsmasq): start → lease", lease), ("baseline (seed dnsmasq): start → name resolves", named)]
    finally:
        sandboxes.destroy(name)
    return rows
