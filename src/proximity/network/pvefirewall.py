"""The Proxmox host firewall: rules that let containers reach DHCP and DNS on the gateway.

With the datacenter firewall on, pve-firewall's ``PVEFW-HOST-IN`` chain accepts lo, established
traffic and the management ports, then applies ``policy_in`` (DROP): a container's DHCP
DISCOVER and DNS queries to the gateway are dropped. pve-firewall rewrites its chains every few
seconds, so a rule added inside them does not last. The Proxmox way is rules in the node's host
firewall, through the API (``/nodes/{node}/firewall/rules``), which pve-firewall compiles itself.

A rule's ``iface`` must match ``pve-iface`` (no hyphen), so it cannot name ``prox-net``: the rules
match addresses and ports instead. A DISCOVER goes from 0.0.0.0 to 255.255.255.255, so the DHCP
rule accepts those two besides the subnet and the gateway. Each rule's comment starts with
``proximity:<bridge>``, which is how ``down`` removes exactly Proximity's rules.
"""

from __future__ import annotations

import shlex
import socket
from dataclasses import dataclass
from typing import Any

from proximity.errors import ProxmoxError
from proximity.settings import Settings


@dataclass(frozen=True)
class PveRule:
    """One rule of the node's host firewall, as the API takes it."""

    comment: str
    params: tuple[tuple[str, str], ...]  # everything else: type, action or macro, proto, ports, addresses

    def as_params(self) -> dict[str, Any]:
        return {**dict(self.params), "comment": self.comment, "enable": 1}

    def matches(self, live: dict[str, Any]) -> bool:
        """The live rule is this one (Proxmox adds pos, digest and defaults of its own)."""
        return live.get("comment") == self.comment and int(live.get("enable", 0) or 0) == 1 and all(
            str(live.get(key, "")) == value for key, value in self.params)

    def pvesh(self, node: str) -> str:
        args = [f"--{key}={value}" for key, value in self.as_params().items()]
        return shlex.join(["pvesh", "create", f"/nodes/{node}/firewall/rules", *args])


def tag(settings: Settings) -> str:
    return f"proximity:{settings.bridge}"


def host_rules(settings: Settings) -> list[PveRule]:
    """What opens DHCP and DNS on the gateway to the containers, and nothing else."""
    s, gw = settings, str(settings.gateway.ip)
    return [
        PveRule(f"{tag(s)} DHCP from containers (DISCOVER is 0.0.0.0 to 255.255.255.255)", (
            ("type", "in"), ("action", "ACCEPT"), ("proto", "udp"), ("sport", "68"), ("dport", "67"),
            ("source", f"0.0.0.0,{s.subnet}"), ("dest", f"255.255.255.255,{gw}"))),
        PveRule(f"{tag(s)} DNS from containers to the gateway", (
            ("type", "in"), ("action", "ACCEPT"), ("macro", "DNS"), ("source", str(s.subnet)), ("dest", gw))),
    ]


RULE_KEYS = ("type", "action", "macro", "proto", "sport", "dport", "source", "dest", "iface")


def is_own(live: Any, settings: Settings) -> bool:
    return str(live.get("comment", "")).startswith(tag(settings) + " ")


def from_live(live: Any) -> PveRule:
    """A live rule as a PveRule (to put back a rule that was removed)."""
    return PveRule(str(live.get("comment", "")), tuple((k, str(live[k])) for k in RULE_KEYS if live.get(k)))


def node_name(settings: Settings) -> str:
    return settings.proxmox_node or socket.gethostname().split(".")[0]


class PveFirewallApi:
    """The node's host-firewall rules through the Proxmox API (proxmoxer, imported when used)."""

    def __init__(self, settings: Settings):
        from proximity.proxmox_client import connect_settings  # the container backend's client, its CAs

        self.settings = settings
        self.node = node_name(settings)
        self._rules = connect_settings(settings, timeout=15).nodes(self.node).firewall.rules

    def rules(self) -> list[dict[str, Any]]:
        return self._call("read the host firewall rules", lambda: self._rules.get())

    def add(self, rule: PveRule) -> None:
        self._call(f"add the host firewall rule {rule.comment!r}", lambda: self._rules.post(pos=0, **rule.as_params()))

    def delete(self, comment: str) -> None:
        """Delete the rule with this comment (positions shift, so it is looked up each time)."""
        for live in self.rules():
            if live.get("comment") == comment:
                self._call(f"delete the host firewall rule {comment!r}",
                           lambda: self._rules(live["pos"]).delete(digest=live.get("digest")))
                return

    def _call(self, what: str, request):
        from proxmoxer.core import ResourceException

        try:
            return request()
        except ResourceException as exc:
            hint = (" (the token needs Sys.Modify on /nodes/" + self.node + ": see the README's role commands)"
                    if exc.status_code == 403 else "")
            raise ProxmoxError(f"Proxmox refused to {what}: {exc}{hint}") from None
        except Exception as exc:  # connection refused, TLS, timeouts: requests' many errors
            from requests.exceptions import SSLError

            from proximity.proxmox_client import tls_hint

            s = self.settings
            if isinstance(exc, SSLError):
                raise ProxmoxError(f"cannot {what}: " + tls_hint(s.proxmox_host, s.proxmox_port,
                                   str(s.proxmox_ca) if s.proxmox_ca else None, exc)) from None
            raise ProxmoxError(f"cannot {what} through the Proxmox API: {exc}") from None
