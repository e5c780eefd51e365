"""Every zone as settings, for the commands that work on one zone's containers or leases.

Resolving the zones needs only the host's addresses and routes (not a whole observation): a
`ct` command reads three netlink dumps more than it did, and nothing when the host has the
default zone alone.
"""

from __future__ import annotations

from proximity.errors import NotFoundError
from proximity.network.observe import read_addressing
from proximity.network.reconciler import NetworkManager
from proximity.spec.naming import DEFAULT_ZONE
from proximity.spec.view import ZoneSettings, default_view


def zone_views(network: NetworkManager) -> tuple[ZoneSettings, ...]:
    """The default zone's view first, then the further zones' (as `up` resolves them)."""
    s = network.settings
    if not s.zones and s.ipv6 == "off":
        return (default_view(s),)
    spec, _ = network.zones(read_addressing(network.host))
    return spec.views() if spec is not None else (default_view(s),)


def zone_view_of(network: NetworkManager, name: str | None, views: tuple[ZoneSettings, ...] | None = None
                 ) -> ZoneSettings:
    """Zone ``name``'s view (None: the default zone's); NotFoundError naming the zones."""
    views = views if views is not None else zone_views(network)
    name = name or DEFAULT_ZONE
    found = next((v for v in views if v.zone == name), None)
    if found is None:
        raise NotFoundError(f"--zone: there is no zone {name!r}: the zones are {', '.join(v.zone for v in views)}",
                            fix="see `proximity zone list`, or create it with `proximity zone create NAME`")
    return found
