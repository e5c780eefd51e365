"""Network-ready time of containers: from the start call to a lease, and to a name a peer resolves.

Proximity's settings (reservation + addn-hosts, dhcp-rapid-commit, no-ping) against the
seed's plain dnsmasq (no reservation, ping check on), on the same sandbox host, and against each
peer's network (``bench/peers.py``), same run.

Proximity's containers and the peers' take turns (:func:`start_each`), so that a slow moment of
this shared machine falls on every network alike. The order of the turn rotates each round, so no
network always starts right after the same one: in a check of 12 pairs, whichever of Proximity and
Incus started second in each pair was faster at the median, by 8 to 23 ms, whichever it was.
The seed's run after them, as its dnsmasq
replaces Proximity's. Every container is started alone and timed by :func:`measure_start` until
each probe holds:
``lease`` (the lease file has its MAC), ``bound`` (its udhcpc holds the lease: the bound hook
configured the address and wrote ``/etc/resolv.conf``, empty until then) and ``name`` (its A
record resolves from the bridge's DNS). Network-ready is the later of ``bound`` and ``name``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable

import peers

from proximity import sandbox as sandboxes
from proximity.containers.base import ContainerSpec
from proximity.containers.lxc import LxcBackend, random_mac
from proximity.containers.manager import ContainerManager
from proximity.host import Host
from proximity.network.reconciler import NetworkManager
from proximity.network.dnsmasq import SupervisedDns
from proximity.settings import load_settings

GATEWAY = "10.10.0.1"
READY = "network-ready"
Probe = Callable[[], object]


def resolves(ns: str, name: str, server: str = GATEWAY) -> Probe:
    return lambda: Host(ns).resolve(name, server, timeout=0.2, attempts=1)


def leased(settings, mac: str) -> Probe:
    def probe() -> bool:
        text = settings.leases_file.read_text() if settings.leases_file.exists() else ""
        return any(f" {mac} " in line for line in text.splitlines())
    return probe


def bound(backend: LxcBackend, vmid: int) -> Probe:
    path = backend.lxcpath / str(vmid) / "rootfs/etc/resolv.conf"
    return lambda: path.exists() and path.stat().st_size > 0


def measure_start(backend, vmid: int, probes: dict[str, Probe], timeout: float = 30) -> dict[str, float]:
    """Seconds from the start call until each probe first holds (inf: not within ``timeout``)."""
    start = time.perf_counter()
    backend.start(vmid)
    found: dict[str, float] = {}
    while len(found) < len(probes) and time.perf_counter() < start + timeout:
        now = time.perf_counter()
        for what, probe in probes.items():
            if what not in found and probe():
                found[what] = now - start
        time.sleep(0.005)
    times = {what: found.get(what, float("inf")) for what in probes}
    if {"bound", "name"} <= times.keys():
        times[READY] = max(times["bound"], times["name"])
    return times


Make = Callable[[int], tuple[int, dict[str, Probe]]]  # container i -> (vmid, its probes)


def start_each(count: int, networks: list[tuple[str, object, Make]]) -> list[tuple[str, list[float]]]:
    """Make and start ``count`` containers on each network, taking turns (container i on every network,
    then i + 1; round i starts with network i mod n), each timed alone; ``(f"{who}: start → {what}", samples)``."""
    samples: dict[tuple[str, str], list[float]] = {}
    for i in range(count):
        turn = i % len(networks)
        for who, backend, make in networks[turn:] + networks[:turn]:
            vmid, probes = make(i)
            for what, seconds in measure_start(backend, vmid, probes).items():
                samples.setdefault((who, what), []).append(seconds)
    return [(f"{who}: start → {what}", values) for (who, what), values in samples.items()]


def on_peer(net: peers.Network) -> tuple[str, object, Make]:
    def make(i: int) -> tuple[int, dict[str, Probe]]:
        vmid, fqdn = net.create(i)
        return vmid, {"bound": bound(net.backend, vmid), "name": resolves(net.ns, fqdn, net.peer.gateway)}
    return net.peer.label, net.backend, make


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

        def ours(i: int) -> tuple[int, dict[str, Probe]]:
            info = manager.create(f"app-{i:02d}", start=False)
            return info.vmid, {"lease": leased(settings, info.mac), "bound": bound(backend, info.vmid),
                               "name": resolves(peer.ns, f"{info.hostname}.prox.local")}

        with contextlib.ExitStack() as stack:  # the peers: each its own namespace, bridge and dnsmasq
            nets = [stack.enter_context(peers.network(sb, spec)) for spec in peers.PEERS]
            rows += start_each(count, [("Proximity", backend, ours), *map(on_peer, nets)])
        for container in backend.list():
            manager.destroy(str(container.vmid))

        # Baseline: the seed's settings, on the same host.
        settings.dnsmasq_conf.write_text(seed_conf(settings))
        SupervisedDns(Host(name), settings).restart()

        def seed(i: int) -> tuple[int, dict[str, Probe]]:
            mac = random_mac()
            ct = backend.create(ContainerSpec(f"seed-{i:02d}", f"name=eth0,bridge=prox-net,ip=dhcp,firewall=1,hwaddr={mac}"))
            return ct.vmid, {"lease": leased(settings, mac.lower()),
                             "name": resolves(peer.ns, f"{ct.hostname}.prox.local")}

        rows += start_each(count, [("baseline (seed dnsmasq)", backend, seed)])
    finally:
        sandboxes.destroy(name)
    return rows
