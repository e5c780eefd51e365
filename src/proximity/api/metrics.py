"""Prometheus metrics: pool, leases, dnsmasq, health, last converge, and per-container traffic.

The network gauges come from the status snapshot (no probe per scrape). The per-container
counters are the bridge ports' own counters, read over netlink (``IFLA_STATS64`` of the links
whose ``IFLA_MASTER`` is the bridge) in the host's network namespace: one netlink dump, no
process. A port is a container's host-side veth: LXC and Proxmox name it ``veth<vmid>i<n>``;
with Proxmox's firewall on, the port on the bridge is ``fwpr<vmid>p<n>`` (the veth sits on
``fwbr<vmid>i<n>``). A port's receive is the container's transmit, so the two are swapped here
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

from proximity.api.status import iproute_in
from proximity.network.observe import vmid_of_port
from proximity.network.reservations import Reservation, Reservations
from proximity.settings import Settings

log = logging.getLogger(__name__)

CONTAINER_LABELS = ("vmid", "hostname", "ip", "interface")


@dataclass(frozen=True)
class PortCounters:
    """One bridge port, counted from the container's side."""

    interface: str
    vmid: int | None
    receive_bytes: int
    transmit_bytes: int
    receive_packets: int
    transmit_packets: int


def bridge_ports(netns: str | None, bridge: str) -> list[PortCounters]:
    """The counters of every port of ``bridge``, in the namespace ``netns``; [] if there is no bridge."""
    with iproute_in(netns) as ipr:
        links = ipr.get_links()
    master = next((link["index"] for link in links if link.get("IFLA_IFNAME") == bridge), None)
    if master is None:
        return []
    ports = []
    for link in links:
        if link.get("IFLA_MASTER") != master:
            continue
        name = link.get("IFLA_IFNAME")
        stats = link.get("IFLA_STATS64") or link.get("IFLA_STATS")
        if stats is None:
            continue
        # The host side receives what the container sends, and the other way round.
        ports.append(PortCounters(name, vmid_of_port(name), receive_bytes=stats["tx_bytes"],
                                  transmit_bytes=stats["rx_bytes"], receive_packets=stats["tx_packets"],
                                  transmit_packets=stats["rx_packets"]))
    return sorted(ports, key=lambda port: (port.vmid is None, port.vmid or 0, port.interface))


class _ReservationsCache:
    """The reservations by vmid, re-read only when the file changes (one stat per scrape)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._by_vmid: dict[int, Reservation] = {}

    def by_vmid(self, settings: Settings, host: Any) -> dict[int, Reservation]:
        path = settings.reservations_db
        try:
            st = os.stat(path)
            key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            key = (str(path), None)
        with self._lock:
            if key != self._key:
                try:
                    reservations = Reservations(settings, host).all()
                except Exception as exc:  # a damaged file must not break the scrape
                    log.warning("metrics: cannot read the reservations: %s", exc)
                    reservations = []
                self._by_vmid = {r.vmid: r for r in reservations if r.vmid is not None}
                self._key = key
            return self._by_vmid


_reservations = _ReservationsCache()


class ProximityCollector(Collector):
    def __init__(self, context: Any):
        self.context = context

    def collect(self) -> Iterator:
        context = self.context
        st = context.status.get()
        converge = context.last_converge or {}

        def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, documentation, value=value)

        yield gauge("proximity_pool_size", "Addresses in the DHCP range.", st.pool_size)
        yield gauge("proximity_leases_in_use", "Active DHCP leases.", st.leases_in_use)
        yield gauge("proximity_leases_free", "Free addresses in the DHCP range.",
                    max(0, st.pool_size - st.leases_in_use))
        yield gauge("proximity_dnsmasq_up", "1 when dnsmasq runs.", int(st.dhcp_service_running))
        # Down as requested (`proximity down`) is as the admin asked: 1, so an alert on < 1 stays quiet;
        # proximity_network_state and proximity_network_up_requested tell it apart from healthy.
        yield gauge("proximity_healthy", "1 healthy (or down as requested), 0.5 degraded, 0 unhealthy.",
                    {"healthy": 1, "down": 1, "degraded": 0.5}.get(st.health_status, 0))
        state = GaugeMetricFamily("proximity_network_state", "1 for the network's state: healthy, degraded, "
                                  "unhealthy, or down (as requested by `proximity down`).", labels=["state"])
        for name in ("healthy", "degraded", "unhealthy", "down"):
            state.add_metric([name], int(st.health_status == name))
        yield state
        yield gauge("proximity_network_up_requested", "1 when the admin's intent is up (`proximity up`), 0 when "
                    "down: the service heals only while it is 1.", int(st.intent == "up"))
        yield gauge("proximity_last_converge_success", "1 when the last converge succeeded.",
                    int(bool(converge.get("ok"))))
        yield gauge("proximity_last_converge_timestamp_seconds", "When the last converge ended (Unix time).",
                    converge.get("time") or 0)
        yield from self._containers()

    def _containers(self) -> Iterator:
        settings = self.context.settings
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
                               f"1 when the ports of {settings.bridge} could be read over netlink.")
        try:
            ports = bridge_ports(self.context.network.host.netns, settings.bridge)
            up.add_metric([], 1)
        except Exception as exc:
            log.warning("metrics: cannot read the ports of %s: %s", settings.bridge, exc)
            ports = []
            up.add_metric([], 0)
        reservations = _reservations.by_vmid(settings, self.context.network.host) if ports else {}
        for port in ports:
            reservation = reservations.get(port.vmid) if port.vmid is not None else None
            labels = [
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
