"""What makes the bridge not Proximity's to run: a stanza of it in another file, or a port to a LAN.

ifupdown2 merges every stanza of a name, in every file the interfaces file sources. An admin's own
``prox-net`` stanza under ``interfaces.d`` (another address, a NIC as its port) would turn Proximity's
bridge into a bridge to the LAN, with an authoritative DHCP server on it. ``up`` refuses, dnsmasq is
never started on such a bridge, and health calls it unhealthy, all from the reasons given here.
"""

from __future__ import annotations

import os

import re

from proximity.network.observe import PORT_RE, Observation
from proximity.network.stanzas import declared_in, parse_stanzas
from proximity.settings import Settings

# Ports that are guests, not a way out: containers' and VMs' (veth/tap/fwpr, as Proxmox names them),
# Proximity's probe (pxp<pid>) and the sandbox's client stand-ins (pxc<n>).
_OWN_PORT_RE = re.compile(r"pxp\d+|pxc\d+")


def is_guest_port(name: str) -> bool:
    return PORT_RE.fullmatch(name) is not None or _OWN_PORT_RE.fullmatch(name) is not None


def declared_elsewhere(settings: Settings, obs: Observation) -> list[str]:
    """A reason for each stanza of the bridge in a file the interfaces file sources."""
    s = settings
    return [
        f"{f.path} line {stanza.first_line} declares {s.bridge} too (sourced from {f.via} line {f.line}); "
        f"ifupdown2 merges it with the stanza in {s.interfaces_file}, so the bridge is not Proximity's alone. "
        f"Delete or rename that stanza (or give Proximity another bridge name), then run `proximity up`"
        for f, stanza in declared_in(obs.sourced, s.bridge)
        if os.path.realpath(f.path) != os.path.realpath(s.interfaces_file)  # a zone's own file is sourced too
    ]


def physical_ports(settings: Settings, obs: Observation) -> list[str]:
    """The bridge's ports that are not a guest's: a NIC, a bond, a VLAN, a veth to somewhere else."""
    return [link.name for link in obs.links if link.master == settings.bridge and not is_guest_port(link.name)]


def physical_port_reason(settings: Settings, ports: list[str]) -> str:
    return (f"{settings.bridge} has a port that is not a container's ({', '.join(ports)}): it bridges to a "
            "network Proximity does not own, and dnsmasq would hand out addresses there. Remove the port "
            f"(`ip link set dev {ports[0]} nomaster`, and from any stanza that names it), then run `proximity up`")


def refusals(settings: Settings, obs: Observation) -> list[str]:
    """Why Proximity must not run the bridge (and dnsmasq on it) as it is: ``[]`` when it may."""
    reasons = declared_elsewhere(settings, obs)
    ports = physical_ports(settings, obs)
    if ports:
        running = "; dnsmasq runs on it now and answers DHCP there: `proximity down` stops it" if obs.dns else ""
        reasons.append(physical_port_reason(settings, ports) + running)
    return reasons


def undeclared_uplink(settings: Settings, obs: Observation, text: str, uplink: str) -> str | None:
    """Why `up` must not run ifreload: the uplink that carries the default route is declared in no file
    (an emptied or truncated interfaces file), so ifreload would take it down and cut the host off."""
    if obs.default_route_link() != uplink:
        return None
    if any(st.name == uplink for st in parse_stanzas(text)) or declared_in(obs.sourced, uplink):
        return None
    return (f"{settings.interfaces_file} declares no stanza for {uplink}, the uplink that carries the default "
            f"route: ifreload would take it down and cut this host off (nothing was changed). Restore the file "
            f"(a copy is under {settings.backup_dir}), then run `proximity up`")
