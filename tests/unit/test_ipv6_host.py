"""The host's IPv6 sysctls for zones with IPv6: the uplink keeps its SLAAC, a host without IPv6 is refused."""

from __future__ import annotations

import pytest

from proximity.errors import SettingsError
from proximity.network.ipv6_host import sysctl_changes, sysctls_to_observe
from proximity.settings import load_settings
from proximity.spec.state import ZoneState
from proximity.spec.zones import resolve

ALL_DISABLE, DEFAULT_DISABLE = "net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"
FORWARDING, UPLINK_RA = "net.ipv6.conf.all.forwarding", "net.ipv6.conf.vmbr0.accept_ra"
SLAAC_HOST = {ALL_DISABLE: "0", DEFAULT_DISABLE: "0", FORWARDING: "0", UPLINK_RA: "1\n"}


def views(ipv6: str = "fd12:3456:789a:1::/64", **zones):
    settings = load_settings(ipv6=ipv6, zones={name: {"ipv6": v6} for name, v6 in zones.items()})
    return resolve(settings, ZoneState(), new_global_id=lambda: 0x1234567890).views()


def test_the_uplink_accepts_ras_before_forwarding_is_switched_on():
    assert sysctls_to_observe(views(), "vmbr0") == (ALL_DISABLE, DEFAULT_DISABLE, FORWARDING, UPLINK_RA)
    assert sysctl_changes(views(), "vmbr0", SLAAC_HOST) == ((UPLINK_RA, "2", "1"), (FORWARDING, "1", "0"))
    # Already forwarding: the uplink still gets its RAs back.
    assert sysctl_changes(views(), "vmbr0", {**SLAAC_HOST, FORWARDING: "1"}) == ((UPLINK_RA, "2", "1"),)
    # A static uplink (0), one already at 2, or no uplink: only forwarding.
    for ra in ("0", "2", None):
        assert sysctl_changes(views(), "vmbr0", {**SLAAC_HOST, UPLINK_RA: ra}) == ((FORWARDING, "1", "0"),)
    assert sysctls_to_observe(views(), None) == (ALL_DISABLE, DEFAULT_DISABLE, FORWARDING)
    assert sysctl_changes(views(), None, SLAAC_HOST) == ((FORWARDING, "1", "0"),)
    assert sysctl_changes(views(), "vmbr0", {**SLAAC_HOST, FORWARDING: "1", UPLINK_RA: "2"}) == ()


def test_no_zone_with_ipv6_reads_and_changes_nothing():
    assert sysctls_to_observe(views("off"), "vmbr0") == ()
    assert sysctl_changes(views("off"), "vmbr0", {ALL_DISABLE: "1"}) == ()
    # A further zone alone with IPv6 is enough.
    assert sysctl_changes(views("off", lab="auto"), "vmbr0", SLAAC_HOST) == ((UPLINK_RA, "2", "1"), (FORWARDING, "1", "0"))


def test_a_host_with_ipv6_disabled_is_refused_naming_the_zones_and_the_fix():
    with pytest.raises(SettingsError) as refused:
        sysctl_changes(views(lab="auto", web="off"), "vmbr0", {**SLAAC_HOST, ALL_DISABLE: "1"})
    message = str(refused.value)
    assert message.startswith("zones 'prox-net', 'lab' ask for IPv6, but IPv6 is disabled on this host "
                              "(net.ipv6.conf.all.disable_ipv6 = 1)")
    assert "sysctl -w net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0" in message
    assert 'set the top-level setting ipv6 and zones.lab.ipv6 to "off"' in message and "'web'" not in message
    with pytest.raises(SettingsError, match=r"^zone 'lab' asks .*default.disable_ipv6 = 1.* zones.lab.ipv6 to \"off\""):
        sysctl_changes(views("off", lab="auto"), "vmbr0", {**SLAAC_HOST, DEFAULT_DISABLE: "1"})
    with pytest.raises(SettingsError, match="this kernel has no IPv6 .*remove ipv6.disable=1"):
        sysctl_changes(views(), "vmbr0", {})
