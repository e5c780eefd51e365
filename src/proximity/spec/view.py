"""A zone seen as settings: what every per-zone part of Proximity (render, observe, plan, dnsmasq,
reservations, health) takes, so each of them is written once for any zone.

:class:`ZoneSettings` is the host's :class:`Settings` with one zone's network, domain, files and
service swapped in. The default zone's view keeps every field and path of the settings (today's
prox-net exactly); a further zone's has its own bridge, subnet, dnsmasq config
(``/etc/proximity/zones/NAME.conf``), state directory (``STATE_DIR/zones/NAME``), service
(``proximity-dns@NAME``) and interfaces file, one of Proximity's own under ``interfaces.d``.
What belongs to the host stays the host's in every view: the lock, the intent, the nftables
ruleset and its record, the API's token.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from proximity.settings import Settings
from proximity.spec.naming import DEFAULT_ZONE, TEMPLATE_SERVICE, zone_state_dir

ZONE_FILE_PREFIX = "proximity-"  # interfaces.d/proximity-NAME: a further zone's stanza


@dataclass(frozen=True)
class ZoneSettings(Settings):
    """One zone's view of the settings (made by :func:`zone_view`, never loaded from a file)."""

    zone: str = DEFAULT_ZONE
    host_settings: Settings | None = None  # the host's settings this view was made from
    ipv6_gateway: ipaddress.IPv6Interface | None = None  # the bridge's IPv6 address with its /64
    ipv6_range: tuple[ipaddress.IPv6Address, ipaddress.IPv6Address] | None = None  # DHCPv6's stateful range
    ipv6_nat: bool = False  # NAT66 out of the uplink (a routed prefix is not NATed)
    nat: bool = True  # IPv4 masqueraded out of the uplink
    host_services: bool = True  # the zone reaches the host's own services (ssh, pveproxy...)
    # The other zones' domains: a peer's (domain, its gateway) are asked there, the rest answered locally
    # (never sent upstream: a zone's names are the host's business only).
    peer_domains: tuple[tuple[str, str], ...] = ()
    other_domains: tuple[str, ...] = ()

    @property
    def is_default(self) -> bool:
        return self.zone == DEFAULT_ZONE

    @property
    def host(self) -> Settings:
        return self.host_settings or self

    @property
    def zone_dir(self) -> Path:
        """Where the zone's reservations, names and log live (the state directory, for the default zone)."""
        return self.state_dir if self.is_default else zone_state_dir(self, self.zone)

    @property
    def reservations_db(self) -> Path:
        return self.zone_dir / "reservations.json"

    @property
    def dhcp_hosts_file(self) -> Path:
        return self.zone_dir / "dhcp-hosts"

    @property
    def addn_hosts_file(self) -> Path:
        return self.zone_dir / "hosts"

    @property
    def dns_log_file(self) -> Path:
        return self.zone_dir / f"{self.service_name}.log"

    @property
    def unit_file(self) -> Path:
        """The default zone's own unit; a further zone's instance runs from the one template unit."""
        return super().unit_file if self.is_default else self.systemd_dir / f"{TEMPLATE_SERVICE}.service"

    @property
    def probe_file(self) -> Path:
        return self.zone_dir / "probe.json"

    # The host's, in every view.
    @property
    def ruleset_file(self) -> Path:
        return self.host.ruleset_file

    @property
    def api_token_file(self) -> Path:
        return self.host.api_token_file

    @property
    def api_tls_cert(self) -> Path:
        return self.host.api_tls_cert

    @property
    def api_tls_key(self) -> Path:
        return self.host.api_tls_key


def zone_file(settings: Settings, zone: str) -> Path:
    """A further zone's interfaces file: Proximity's own, in the directory the host's file sources."""
    return settings.interfaces_file.parent / "interfaces.d" / f"{ZONE_FILE_PREFIX}{zone}"


def zone_view(settings: Settings, zone, others: tuple = ()) -> ZoneSettings:
    """``zone`` (a :class:`proximity.spec.zones.ZoneSpec`) as settings built on the host's ``settings``;
    ``others``: the host's other zones (their domains, and their gateways where peered)."""
    base = settings.host if isinstance(settings, ZoneSettings) else settings
    v4, v6 = zone.ipv4, zone.ipv6
    fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
    fields.update(
        zone=zone.name, host_settings=base, bridge=zone.bridge, gateway=v4.gateway_interface,
        dhcp_start=v4.dhcp_range[0], dhcp_end=v4.dhcp_range[1], domain=zone.domain, nat=v4.nat,
        host_services=zone.host_services,
        ipv6_gateway=v6.gateway_interface if v6 else None, ipv6_range=v6.dhcp_range if v6 else None,
        ipv6_nat=bool(v6 and v6.nat),
        peer_domains=tuple((o.domain, str(o.ipv4.gateway)) for o in others
                           if tuple(sorted((zone.name, o.name))) in base.peers),
        other_domains=tuple(o.domain for o in others if tuple(sorted((zone.name, o.name))) not in base.peers),
    )
    if not zone.is_default:
        fields.update(interfaces_file=zone_file(base, zone.name), dnsmasq_conf=zone.paths.dnsmasq_conf,
                      leases_file=zone.paths.leases_file, service_name=zone.paths.service_name)
    return ZoneSettings(**fields)


def default_view(settings: Settings) -> ZoneSettings:
    """The default zone from the settings alone (IPv4; what needs no zone resolution)."""
    if isinstance(settings, ZoneSettings):
        return settings
    return ZoneSettings(**{f: getattr(settings, f) for f in settings.__dataclass_fields__}, host_settings=settings)



def reservation_dbs(settings: Settings) -> dict[str, Path]:
    """Every declared zone's reservations file, by zone (the host's MACs are unique across them all)."""
    host = settings.host if isinstance(settings, ZoneSettings) else settings
    return {DEFAULT_ZONE: default_view(host).reservations_db,
            **{z.name: zone_state_dir(host, z.name) / "reservations.json" for z in host.zones}}
