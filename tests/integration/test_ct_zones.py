"""Containers in zones for real: the lxc backend on a sandbox with prox-net, web and db.

`ct create --zone web` gets a lease in web's subnet and a name under web.internal; `ct move` to db
keeps the MAC, takes a db lease at once and drops the web reservation and name; a name held in two
zones is refused without --zone; `ct list` and `leases` show the zones.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from proximity.containers.lxc import LxcBackend
from proximity.host import wait_for
from proximity.network.reconciler import NetworkManager
from proximity.network.reservations import Reservations
from proximity.network.zone_views import zone_view_of
from tests.integration.tools import proximity, resolve

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, LXC)"),
    pytest.mark.skipif(shutil.which("lxc-start") is None, reason="LXC is not installed: apt-get install lxc"),
]

WEB_NET, WEB_GW, DB_NET, DB_GW = "10.20.0.0/24", "10.20.0.1", "10.30.0.0/24", "10.30.0.1"


@pytest.fixture(scope="module")
def zoned(network):
    sb = network
    backend = LxcBackend(sb.name, sb.state_dir / "lxc")
    proximity("zone", "create", "web", "--subnet", WEB_NET, "--ipv6", "off", "--sandbox", sb.name)
    proximity("zone", "create", "db", "--subnet", DB_NET, "--ipv6", "off", "--sandbox", sb.name)
    try:
        yield sb, backend
    finally:
        for container in backend.list():
            backend.destroy(container.vmid)
        for zone in ("web", "db"):
            proximity("zone", "delete", zone, "--force", "--sandbox", sb.name, check=False)


def cli_json(sb, *args):
    return json.loads(proximity(*args, "--sandbox", sb.name, "--json").stdout)


def leases(sb, zone: str | None = None) -> list[dict]:
    return cli_json(sb, "leases", *(["--zone", zone] if zone else []))


def leased(sb, zone: str, mac: str) -> str | None:
    return next((lease["ip"] for lease in leases(sb, zone) if lease["mac"] == mac), None)


def eth0_has(backend, vmid: int, ip: str) -> bool:
    out = backend.exec(vmid, ["ip", "-4", "-o", "addr", "show", "eth0"], timeout=5).stdout
    return f"inet {ip}/" in out


def reserved(sb, zone: str) -> list[str]:
    network = NetworkManager(sb.settings())
    return [r.hostname for r in Reservations(zone_view_of(network, zone), network.host).all()]


def test_create_in_a_zone_then_move_it_keeping_its_mac(zoned):
    sb, backend = zoned
    app = cli_json(sb, "ct", "create", "app-1", "--zone", "web")
    assert app["zone"] == "web" and app["bridge"] == "pz-web" and app["ip"].startswith("10.20.0.")
    assert app["dns_name"] == "app-1.web.internal"
    assert resolve(sb.name, "app-1.web.internal", WEB_GW) == [app["ip"]]  # from the host
    assert wait_for(lambda: leased(sb, "web", app["mac"]) == app["ip"], timeout=20), leases(sb)
    assert wait_for(lambda: eth0_has(backend, app["vmid"], app["ip"]), timeout=10)
    assert leased(sb, "prox-net", app["mac"]) is None
    every = leases(sb)
    assert {"zone": "web", "ip": app["ip"]}.items() <= next(l for l in every if l["mac"] == app["mac"]).items()

    # the same name in another zone is another container, with another MAC; a bare name is then ambiguous
    twin = cli_json(sb, "ct", "create", "app-1", "--no-start")  # prox-net
    assert twin["zone"] == "prox-net" and twin["mac"] != app["mac"] and twin["ip"].startswith("10.10.0.")
    listed = {(c["hostname"], c["zone"]): c for c in cli_json(sb, "ct", "list")}
    assert listed[("app-1", "web")]["vmid"] == app["vmid"] and listed[("app-1", "prox-net")]["vmid"] == twin["vmid"]
    assert [c["vmid"] for c in cli_json(sb, "ct", "list", "--zone", "web")] == [app["vmid"]]
    refused = proximity("ct", "show", "app-1", "--sandbox", sb.name, check=False)
    assert refused.returncode == 2 and "--zone" in refused.stderr and "Traceback" not in refused.stderr
    assert cli_json(sb, "ct", "show", "app-1", "--zone", "web")["vmid"] == app["vmid"]
    proximity("ct", "destroy", "app-1", "--zone", "prox-net", "--sandbox", sb.name)
    assert cli_json(sb, "ct", "show", "app-1")["zone"] == "web"  # one zone holds it now

    # bad input changes nothing
    unknown = proximity("ct", "move", "app-1", "--zone", "nope", "--sandbox", sb.name, check=False)
    assert unknown.returncode == 2 and "prox-net, web, db" in unknown.stderr, unknown.stderr
    same = proximity("ct", "move", "app-1", "--zone", "web", "--sandbox", sb.name, check=False)
    assert same.returncode == 2 and "in zone web already" in same.stderr
    plan = cli_json(sb, "ct", "move", "app-1", "--zone", "db", "--dry-run")
    assert plan["dry_run"] and plan["ip"].startswith("10.30.0.") and plan["mac"] == app["mac"]
    assert reserved(sb, "web") == ["app-1"] and reserved(sb, "db") == [] and "pz-web" in backend.get_net0(app["vmid"])

    moved = cli_json(sb, "ct", "move", "app-1", "--zone", "db")
    assert moved["mac"] == app["mac"] and moved["ip"].startswith("10.30.0.") and moved["zone"] == "db"
    assert "bridge=pz-db" in backend.get_net0(app["vmid"]) and f"hwaddr={app['mac']}" in backend.get_net0(app["vmid"]).lower()
    assert reserved(sb, "web") == [] and reserved(sb, "db") == ["app-1"]
    assert leased(sb, "db", app["mac"]) == moved["ip"]  # its new lease, at once (the move waited for it)
    assert leased(sb, "web", app["mac"]) is None  # the old one released
    assert eth0_has(backend, app["vmid"], moved["ip"])
    assert resolve(sb.name, "app-1.db.internal", DB_GW) == [moved["ip"]]
    assert resolve(sb.name, "app-1.web.internal", WEB_GW) == []
    shown = cli_json(sb, "ct", "show", "app-1")
    assert (shown["zone"], shown["ip"], shown["state"]) == ("db", moved["ip"], "running")


def test_migrate_into_a_zone(zoned):
    from proximity.containers.base import ContainerSpec

    sb, backend = zoned
    old = backend.create(ContainerSpec("legacy-9", "name=eth0,bridge=vmbr0,ip=198.51.100.69/24,gw=198.51.100.1"))
    backend.start(old.vmid)
    report = cli_json(sb, "migrate", str(old.vmid), "--zone", "web")
    assert report["dns_name"] == "legacy-9.web.internal" and report["ip"].startswith("10.20.0.")
    assert "bridge=pz-web" in backend.get_net0(old.vmid)
    again = proximity("migrate", str(old.vmid), "--zone", "db", "--sandbox", sb.name, check=False)
    assert again.returncode == 2 and "ct move" in again.stderr  # another zone's bridge: that is a move
    assert cli_json(sb, "ct", "show", str(old.vmid))["zone"] == "web"


def test_a_container_in_an_ipv6_zone_gets_its_reserved_ipv6_by_dhcpv6_and_its_aaaa_before_boot(zoned):
    sb, backend = zoned
    proximity("zone", "create", "six", "--subnet", "10.40.0.0/24", "--sandbox", sb.name)  # --ipv6 auto
    try:
        made = cli_json(sb, "ct", "create", "app-6", "--zone", "six", "--no-start")
        view = zone_view_of(NetworkManager(sb.settings()), "six")
        (reservation,) = [r for r in Reservations(view, NetworkManager(sb.settings()).host).all() if r.hostname == "app-6"]
        gateway6 = str(view.ipv6_gateway.ip)
        aaaa = resolve(sb.name, "app-6.six.internal", gateway6, rdtype="AAAA")  # before the first boot
        assert len(aaaa) == 1 and aaaa[0].startswith(str(view.ipv6_gateway.network.network_address)[:-1])
        assert "ip6=dhcp" in backend.get_net0(made["vmid"])
        proximity("ct", "start", "app-6", "--zone", "six", "--sandbox", sb.name)

        def has_reserved_v6() -> bool:
            out = backend.exec(made["vmid"], ["ip", "-6", "-o", "addr", "show", "eth0", "scope", "global"], timeout=5)
            return f"{aaaa[0]}/" in out.stdout and "tentative" not in out.stdout
        assert wait_for(has_reserved_v6, 20), backend.exec(made["vmid"], ["ip", "-6", "addr"], timeout=5).stdout
        assert resolve(sb.name, "app-6.six.internal", view.gateway.ip.exploded) == [reservation.ip]
        row = next(r for r in cli_json(sb, "zone", "list") if r["name"] == "six")
        assert wait_for(lambda: next(r for r in cli_json(sb, "zone", "list") if r["name"] == "six")["leases6_in_use"] == 1,
                        10), row  # its DHCPv6 lease, counted apart from IPv4
    finally:
        proximity("ct", "destroy", "app-6", "--zone", "six", "--force", "--sandbox", sb.name, check=False)
        proximity("zone", "delete", "six", "--force", "--sandbox", sb.name, check=False)
