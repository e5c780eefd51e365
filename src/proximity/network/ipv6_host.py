"""The host's IPv6 switches a zone with IPv6 needs: pure, readings in, changes out.

A zone's IPv6 is routed (or NAT66'd) out of the uplink, so the host forwards IPv6
(``net.ipv6.conf.all.forwarding=1``). Forwarding has a side effect: an interface with
``accept_ra=1`` stops accepting router advertisements, and a host that got its own IPv6 address
and default route by SLAAC on the uplink would lose them when they expire. So, as LXD and Incus
do, the uplink's ``accept_ra`` is raised to 2 (accept even when forwarding) *before* forwarding is
switched on. A host with IPv6 disabled cannot serve an IPv6 zone: that is refused, with the fix.

Typical use (the planner turns each change into a ``SetSysctl``)::

    readings = {name: read_sysctl(name) for name in sysctls_to_observe(views, uplink)}
    for key, value, old in sysctl_changes(views, uplink, readings):
        ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from proximity.errors import SettingsError

DISABLE = "net.ipv6.conf.all.disable_ipv6"
DISABLE_DEFAULT = "net.ipv6.conf.default.disable_ipv6"  # what a new bridge starts with
FORWARDING = "net.ipv6.conf.all.forwarding"


def accept_ra(interface: str) -> str:
    return f"net.ipv6.conf.{interface}.accept_ra"


def _ipv6_zones(views: Iterable) -> list:
    return [v for v in views if getattr(v, "ipv6_gateway", None) is not None]


def sysctls_to_observe(views: Iterable, uplink: str | None) -> tuple[str, ...]:
    """The sysctls :func:`sysctl_changes` reads (none when no zone has IPv6)."""
    if not _ipv6_zones(views):
        return ()
    return (DISABLE, DISABLE_DEFAULT, FORWARDING) + ((accept_ra(uplink),) if uplink else ())


def sysctl_changes(views: Iterable, uplink: str | None,
                   readings: Mapping[str, str | None]) -> tuple[tuple[str, str, str | None], ...]:
    """``(key, value, old)`` to apply in this order; SettingsError if a zone asks for IPv6 the host has not.

    ``readings``: each of :func:`sysctls_to_observe`'s names -> its value, or None if it does not
    exist (no IPv6 in the kernel, or no such interface).
    """
    zones = _ipv6_zones(views)
    if not zones:
        return ()
    value = {name: (None if readings.get(name) is None else str(readings[name]).strip())
             for name in sysctls_to_observe(zones, uplink)}
    _check_enabled(zones, value)
    changes: list[tuple[str, str, str | None]] = []
    if uplink and value[accept_ra(uplink)] == "1":  # first: forwarding would stop the uplink's SLAAC
        changes.append((accept_ra(uplink), "2", "1"))
    if value[FORWARDING] != "1":
        changes.append((FORWARDING, "1", value[FORWARDING]))
    return tuple(changes)


def _check_enabled(zones: list, value: Mapping[str, str | None]) -> None:
    if value[DISABLE] is None:
        why, fix = ("this kernel has no IPv6 (/proc/sys/net/ipv6 is missing: booted with ipv6.disable=1?)",
                    "remove ipv6.disable=1 from the kernel command line and reboot")
    elif value[DISABLE] == "1" or value[DISABLE_DEFAULT] == "1":
        key = DISABLE if value[DISABLE] == "1" else DISABLE_DEFAULT
        why = f"IPv6 is disabled on this host ({key} = 1)"
        fix = (f"enable it with `sysctl -w {DISABLE}=0 {DISABLE_DEFAULT}=0` and delete the line that disables "
               "it from /etc/sysctl.conf or /etc/sysctl.d/")
    else:
        return
    names = ", ".join(repr(v.zone) for v in zones)
    asks = f"zones {names} ask" if len(zones) > 1 else f"zone {names} asks"
    off = " and ".join("the top-level setting ipv6" if v.is_default else f"zones.{v.zone}.ipv6" for v in zones)
    raise SettingsError(f"{asks} for IPv6, but {why}: {fix}, or set {off} to \"off\"")
