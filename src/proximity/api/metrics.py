"""Prometheus metrics: pool, leases, dnsmasq, health, last converge, and per-container traffic.

Every per-network metric has a ``zone`` label and a sample for every zone (the default zone is
``prox-net``). The default zone's gauges come from the status snapshot (no probe per scrape), the
further zones' from the service's zone statuses (read again at most every few seconds). The per-container
counters are the bridge ports' own counters, read over netlink (``IFLA_STATS64`` of the links
whose ``IFLA_MASTER`` is the bridge) in the host's network namespace: one netlink dump, no
process. A port is a container's host-side veth: LXC and Proxmox name it ``veth<vmid>i<n>``;
with Proxmox's firewall on, the port on the bridge is ``fwpr<vmid>p<n>`` (the veth sits on
``fwbr<vmid>i<n>``); every zone's bridge is read from the same dump. A port's receive is the
container's transmit, so the two are swapped here
to count from the container's point of view. The hostname and the address come from the
reservations file, re-read only when it changes.

The text is produced by prometheus_client (HELP/TYPE lines, label escaping, ``_total`` counters).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from proximity.api.events import iproute_in
from proximity.network.observe import vmid_of_port
from proximity.network.reservations import Reservation, Reservations
from proximity.settings import Settings
from proximity.spec.view import default_view

log = logging.getLogger(__name__)

CONTAINER_LABELS = ("zone", "vmid", "hostname", "ip", "interface")


@dataclass(frozen=True)
class PortCounters:
    """One bridge port, counted from the container's side."""

    interface: str
    vmid: int | None
    receive_bytes: int
    transmit_bytes: int
    receive_packets: int
    transmit_packets: int


def bridge_ports(netns: str | None, bridges: list[str]) -> dict[str, list[PortCounters]]:
    """The counters of every port of each of ``bridges`` (those that exist), in the namespace ``netns``,
    from one netlink dump."""
    with iproute_in(netns) as ipr:
        links = ipr.get_links()
    masters = {link["index"]: link.get("IFLA_IFNAME") for link in links if link.get("IFLA_IFNAME") in bridges}
    found: dict[str, list[PortCounters]] = {bridge: [] for bridge in masters.values()}
    for link in links:
        bridge = masters.get(link.get("IFLA_MASTER"))
        stats = link.get("IFLA_STATS64") or link.get("IFLA_STATS")
        if bridge is None or stats is None:
            continue
        name = link.get("IFLA_IFNAME")
        # The host side receives what the container sends, and the other way round.
        found[bridge].append(PortCounters(name, vmid_of_port(name), receive_bytes=stats["tx_bytes"],
                                          transmit_bytes=stats["rx_bytes"], receive_packets=stats["tx_packets"],
                                          transmit_packets=stats["rx_packets"]))
    for ports in found.values():
        ports.sort(key=lambda port: (port.vmid is None, port.vmid or 0, port.interface))
    return found


class _ReservationsCache:
    """The reservations by vmid, re-read only when the file changes (one stat per scrape)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cached: dict[str, tuple[tuple, dict[int, Reservation]]] = {}  # by file: (its stat, by vmid)

    def by_vmid(self, settings: Settings, host: Any) -> dict[int, Reservation]:
        path = settings.reservations_db
        try:
            st = os.stat(path)
            key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            key = (str(path), None)
        with self._lock:
            cached = self._cached.get(str(path))
            if cached is None or cached[0] != key:
                try:
                    reservations = Reservations(settings, host).all()
                except Exception as exc:  # a damaged file must not break the scrape
                    log.warning("metrics: cannot read the reservations %s: %s", path, exc)
                    reservations = []
                cached = self._cached[str(path)] = (key, {r.vmid: r for r in reservations if r.vmid is not None})
            return cached[1]


_reservations = _ReservationsCache()


class ProximityCollector(Collector):
    def __init__(self, context: Any):
        self.context = context

    def collect(self) -> Iterator:
        context = self.context
        try:
            zones = context.zones.get()  # every zone, the default (prox-net) first with the snapshot's status
        except Exception as exc:  # a damaged zones.json must not break the scrape: the default zone still counts
            log.warning("metrics: cannot read the zones: %s", exc)
            zones = [(default_view(context.settings), context.status.get())]
        converge = context.last_converge or {}

        def per_zone(name: str, documentation: str, value_of) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, documentation, labels=["zone"])
            for view, st in zones:
                family.add_metric([view.zone], value_of(st))
            return family

        yield per_zone("proximity_pool_size", "Addresses in the zone's DHCP range.", lambda st: st.pool_size)
        yield per_zone("proximity_leases_in_use", "Active DHCP leases in the zone.", lambda st: st.leases_in_use)
        yield per_zone("proximity_leases_free", "Free addresses in the zone's DHCP range.",
                       lambda st: max(0, st.pool_size - st.leases_in_use))
        yield per_zone("proximity_dnsmasq_up", "1 when the zone's dnsmasq runs.", lambda st: int(st.dhcp_service_running))
        # Down as requested (`proximity down`, `down --zone`) is as the admin asked: 1, so an alert on < 1 stays
        # quiet; proximity_network_state and proximity_network_up_requested tell it apart from healthy.
        yield per_zone("proximity_healthy", "1 healthy (or down as requested), 0.5 degraded, 0 unhealthy.",
                       lambda st: {"healthy": 1, "down": 1, "degraded": 0.5}.get(st.health_status, 0))
        state = GaugeMetricFamily("proximity_network_state", "1 for the zone's state: healthy, degraded, "
                                  "unhealthy, or down (as requested by `proximity down`).", labels=["zone", "state"])
        for view, st in zones:
            for name in ("healthy", "degraded", "unhealthy", "down"):
                state.add_metric([view.zone, name], int(st.health_status == name))
        yield state
        yield per_zone("proximity_network_up_requested", "1 when the admin's intent for the zone is up (`proximity "
                       "up`), 0 when down: the service heals only while it is 1.", lambda st: int(st.intent == "up"))
        yield GaugeMetricFamily("proximity_last_converge_success", "1 when the last converge succeeded.",
                                value=int(bool(converge.get("ok"))))
        yield GaugeMetricFamily("proximity_last_converge_timestamp_seconds", "When the last converge ended (Unix time).",
                                value=converge.get("time") or 0)
        yield from self._containers([view for view, _ in zones])

    def _containers(self, views: list) -> Iterator:
        host = self.context.network.host
        families = {
            key: CounterMetricFamily(f"proximity_container_{key}", documentation, labels=CONTAINER_LABELS)
            for key, documentation in (
                ("receive_bytes", "Bytes the container received on the bridge (its host-side port's transmit)."),
                ("transmit_bytes", "Bytes the container sent on the bridge (its host-side port's receive)."),
                ("receive_packets", "Packets the container received on the bridge."),
                ("transmit_packets", "Packets the container sent on the bridge."),
            )
        }
        up = GaugeMetricFamily("proximity_container_traffic_up",
                               "1 when the ports of the zone's bridge could be read over netlink.", labels=["zone"])
        try:
            ports = bridge_ports(host.netns, [view.bridge for view in views])
        except Exception as exc:
            log.warning("metrics: cannot read the bridges' ports: %s", exc)
            ports = {}
        for view in views:
            up.add_metric([view.zone], int(view.bridge in ports))
            found = ports.get(view.bridge, [])
            reservations = _reservations.by_vmid(view, host) if found else {}
            for port in found:
                reservation = reservations.get(port.vmid) if port.vmid is not None else None
                labels = [
                    view.zone,
                    "" if port.vmid is None else str(port.vmid),
                    reservation.hostname if reservation else "",
                    reservation.ip if reservation else "",
                    port.interface,
                ]
                for key, family in families.items():
                    family.add_metric(labels, getattr(port, key))
        yield up
        yield from families.values()


def render_metrics(context: Any) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProximityCollector(context))
    return generate_latest(registry).decode()
