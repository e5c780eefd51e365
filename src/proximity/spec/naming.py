"""Zone names, and what is named after them: the bridge, the files, the dnsmasq service.

A zone name is 1 to 32 lowercase letters, digits and hyphens, starting with a letter and not
ending with a hyphen. Lowercase only, because the name becomes a file name, a systemd instance
name (``proximity-dns@NAME``), a DNS label (``NAME.internal``) and part of firewall chain names,
and ``Web`` and ``web`` must not be two zones. ``prox-net`` is the default zone: today's network,
configured by the top-level settings and keeping today's names and paths.

Bridges (at most 15 characters, Linux's IFNAMSIZ):

- ``pz-NAME`` when the name has 12 characters or fewer;
- else ``pz-`` + the name's first 6 characters + ``_`` + 5 hex digits of SHA-256 of the name.
  Zone names have no ``_``, so a hashed bridge never equals a short one; two hashed ones
  collide only if the names share their first 6 characters and 20 bits of hash, and the
  zone checks refuse that (and any bridge equal to the default zone's) by name.

The rule depends on the name alone: a zone keeps its bridge when other zones come and go.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proximity.settings import Settings

DEFAULT_ZONE = "prox-net"
ZONE_NAME_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?", re.ASCII)
BRIDGE_PREFIX = "pz-"
IFNAMSIZ = 15  # usable characters of a Linux interface name
TEMPLATE_SERVICE = "proximity-dns@"  # the systemd template unit of the further zones' dnsmasq


def check_zone_name(name: object) -> str:
    """The name, if it is a usable zone name; ValueError saying why not."""
    if not isinstance(name, str) or not ZONE_NAME_RE.fullmatch(name):
        raise ValueError(
            f"zone name {name!r} is not usable: use 1 to 32 lowercase letters, digits and '-', "
            "starting with a letter and not ending with '-' (for example 'web' or 'lab-2')"
        )
    if name == DEFAULT_ZONE:
        raise ValueError(
            f"zone name {name!r} is the default zone, which the top-level settings configure "
            "(bridge, gateway, dhcp_start, dhcp_end, domain, ipv6): set those instead of a table zones.prox-net"
        )
    return name


def bridge_name(zone: str) -> str:
    """The bridge of a further zone (see the module docstring for the rule)."""
    short = BRIDGE_PREFIX + zone
    if len(short) <= IFNAMSIZ:
        return short
    digest = hashlib.sha256(zone.encode()).hexdigest()[:5]
    return f"{BRIDGE_PREFIX}{zone[:6]}_{digest}"


@dataclass(frozen=True)
class ZonePaths:
    """Where one zone's dnsmasq keeps its config, its state and its process."""

    dnsmasq_conf: Path
    leases_file: Path
    reservations_db: Path
    dhcp_hosts_file: Path
    addn_hosts_file: Path
    dns_pid_file: Path
    dns_log_file: Path
    service_name: str  # the systemd unit, without ".service"
    unit_file: Path  # the unit file that defines it


def default_zone_paths(settings: Settings) -> ZonePaths:
    """The default zone's: exactly today's paths and service, taken from the settings."""
    s = settings
    return ZonePaths(
        dnsmasq_conf=s.dnsmasq_conf, leases_file=s.leases_file, reservations_db=s.reservations_db,
        dhcp_hosts_file=s.dhcp_hosts_file, addn_hosts_file=s.addn_hosts_file, dns_pid_file=s.dns_pid_file,
        dns_log_file=s.dns_log_file, service_name=s.service_name, unit_file=s.unit_file,
    )


def zone_state_dir(settings: Settings, zone: str) -> Path:
    """A further zone's state directory: leases, reservations and the dnsmasq log."""
    return settings.state_dir / "zones" / zone


def zone_paths(settings: Settings, zone: str) -> ZonePaths:
    """A further zone's: one state directory, one config file, one instance of the template unit.

    Built on the same settings as the default zone's (state_dir, dnsmasq_conf's directory, run_dir,
    systemd_dir), so a sandbox that moves those moves every zone's files too.
    """
    state, service = zone_state_dir(settings, zone), f"{TEMPLATE_SERVICE}{zone}"
    return ZonePaths(
        dnsmasq_conf=settings.dnsmasq_conf.parent / "zones" / f"{zone}.conf",
        leases_file=state / "dnsmasq.leases",
        reservations_db=state / "reservations.json",
        dhcp_hosts_file=state / "dhcp-hosts",
        addn_hosts_file=state / "hosts",
        dns_pid_file=settings.run_dir / f"{service}.pid",
        dns_log_file=state / f"{service}.log",
        service_name=service,
        unit_file=settings.systemd_dir / f"{TEMPLATE_SERVICE}.service",  # the template every zone runs from
    )
