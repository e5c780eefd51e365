"""The one hostname check: what a container may be called on the managed network."""

from __future__ import annotations

import re

from proximity.errors import InputError

# Used with fullmatch and re.ASCII (``\d`` would match any Unicode digit).
LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)", re.ASCII)

# Names a container may not take, because clients give them a meaning of their own or they
# would shadow something else on the network (compared case-insensitively):
# - localhost and Debian's stock /etc/hosts names (RFC 6761; resolvers answer them locally);
# - wpad and isatap: browsers and Windows look these up to find a proxy or a tunnel, so a
#   container by that name would be handed other machines' traffic;
# - gateway, _gateway, router: what systemd-resolved and admins call the gateway (10.10.0.1
#   has no DNS name of its own: dnsmasq runs with no-hosts);
# - broadcasthost: macOS's name for 255.255.255.255.
RESERVED_HOSTNAMES = frozenset({
    "localhost", "localdomain", "ip6-localhost", "ip6-loopback", "ip6-allnodes", "ip6-allrouters",
    "broadcasthost", "wpad", "isatap", "gateway", "_gateway", "router",
})


def is_hostname_label(name: str) -> bool:
    """RFC 1123 label: 1-63 letters, digits and hyphens, no hyphen at either end."""
    return isinstance(name, str) and LABEL_RE.fullmatch(name) is not None


def is_dns_name(name: str) -> bool:
    """Dot-separated RFC 1123 labels, at most 253 characters (Proxmox takes FQDN hostnames)."""
    return isinstance(name, str) and len(name) <= 253 and all(is_hostname_label(label) for label in name.split("."))


# The messages of check_hostname, in the order it checks; the dashboard is served these (and the
# pattern and the reserved names) so that its check and the server's are one.
HOSTNAME_MESSAGES = {
    "label": "hostname {name!r} is not a valid RFC 1123 label: use 1 to 63 letters, digits and hyphens, "
             "not starting or ending with a hyphen, and no dots (for example 'nginx-01')",
    "digits": "hostname {name!r} is all digits, which reads as a container id in every command that takes "
              "a hostname or an id: add a letter (for example 'ct-{name}')",
    "reserved": "hostname {name!r} is reserved (clients resolve it to something else, or it would take "
                "traffic meant for another machine): pick another name",
}


def check_hostname(name: str) -> str:
    """The one hostname check of Proximity: a container's name on the managed network.

    An RFC 1123 label (no dots: the DNS name is ``NAME.<domain>``), not all digits (a number
    means a container id wherever a command takes "HOSTNAME or ID"), and not a reserved name
    (:data:`RESERVED_HOSTNAMES`). Returns the name; raises :class:`InputError` saying why not.
    """
    if not is_hostname_label(name):
        raise InputError(HOSTNAME_MESSAGES["label"].format(name=name))
    if name.isdigit():
        raise InputError(HOSTNAME_MESSAGES["digits"].format(name=name))
    if name.lower() in RESERVED_HOSTNAMES:
        raise InputError(HOSTNAME_MESSAGES["reserved"].format(name=name))
    return name
