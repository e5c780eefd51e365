"""Zones on a real sandbox: two further zones beside prox-net, each with its bridge, dnsmasq, leases
and names, isolated from each other (and from the LAN) until peered; `down --zone`, `zone delete`,
and Proxmox's writer over a host with three zones."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from proximity import sandbox as sandboxes
from proximity.network.reconciler import NetworkManager
from proximity.network.reservations import Reservations
from proximity.sandbox import pve_host
from tests.integration.test_kill import dnsmasqs
from tests.integration.tools import Listener, connect, nft_table, proximity, resolve, wait_or_fail
from tests.unit.pve_rewrite import PveRewrite

WEB_NET, WEB_GW = "10.20.0.0/24", "10.20.0.1"
ORIGINAL: dict[str, str] = {}  # the sandbox's interfaces file before Proximity's `up`


@pytest.fixture(scope="module")
def zoned(sandbox):
    """prox-net, web (10.20.0.0/24) and db (a /24 Proximity picks), each with one client."""
    sb = sandbox
    ORIGINAL[sb.name] = sb.interfaces_file.read_text()
    proximity("up", "--sandbox", sb.name)
    proximity("zone", "create", "web", "--subnet", WEB_NET, "--ipv6", "off", "--sandbox", sb.name)
    proximity("zone", "create", "db", "--ipv6", "off", "--sandbox", sb.name)
    clients = {zone: sandboxes.attach_client(sb, f"{zone}-1", bridge=bridge)
               for zone, bridge in (("prox-net", "prox-net"), ("web", "pz-web"), ("db", "pz-db"))}
    try:
        yield sb, clients
    finally:
        for client in clients.values():
            sandboxes.detach_client(sb, client.hostname)
        for zone in ("web", "db"):
            proximity("zone", "delete", zone, "--force", "--sandbox", sb.name, check=False)
        proximity("down", "--purge", "--force", "--sandbox", sb.name, check=False)


def zones(sb) -> dict[str, dict]:
    return {row["name"]: row for row in json.loads(proximity("zone", "list", "--json", "--sandbox", sb.name).stdout)}


def zone_dnsmasqs(sb, zone: str) -> list[int]:
    conf = sb.dnsmasq_conf.parent / "zones" / f"{zone}.conf"
    return [int(pid) for pid in subprocess.run(["pgrep", "-f", "--", f"--conf-file={conf}"], capture_output=True,
                                               text=True).stdout.split()]


def pings(ns: str, address: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, "busybox", "ping", "-c1", "-W1", address],
                          capture_output=True, timeout=10).returncode == 0


def test_each_zone_has_its_own_subnet_lease_names_and_dnsmasq(zoned):
    sb, clients = zoned
    rows = zones(sb)
    assert [rows[z]["health"] for z in ("prox-net", "web", "db")] == ["healthy"] * 3, rows
    assert rows["web"]["subnets"] == [WEB_NET] and rows["web"]["bridge"] == "pz-web"
    db_net = rows["db"]["subnets"][0]
    assert db_net not in (WEB_NET, "10.10.0.0/24") and rows["db"]["domain"] == "db.internal"
    assert clients["web"].ip.startswith("10.20.0.") and clients["prox-net"].ip.startswith("10.10.0.")
    assert clients["db"].ip.startswith(db_net.rsplit(".", 2)[0])
    # A names inside each zone, from the host and from the zone's own client
    assert resolve(sb.name, "web-1.web.internal", WEB_GW) == [clients["web"].ip]
    assert resolve(clients["web"].ns, "web-1.web.internal", WEB_GW) == [clients["web"].ip]
    assert resolve(clients["db"].ns, "db-1.db.internal", rows["db"]["gateway"]) == [clients["db"].ip]
    # one dnsmasq per zone, each bound to its own bridge
    services = {row["service"] for row in rows.values()}
    assert services == {"proximity-dns", "proximity-dns@web", "proximity-dns@db"}
    assert len(dnsmasqs(sb)) == 1 and all(len(zone_dnsmasqs(sb, z)) == 1 for z in ("web", "db"))
    # a second `up` plans nothing
    assert "Nothing to do" in proximity("up", "--sandbox", sb.name).stdout


def test_zones_are_isolated_both_ways_until_peered(zoned):
    sb, clients = zoned
    web, db, default = clients["web"], clients["db"], clients["prox-net"]
    db_gw = zones(sb)["db"]["gateway"]
    with Listener(db.ns, "0.0.0.0", 8080), Listener(web.ns, "0.0.0.0", 8080):
        for src, dst in ((web, db), (db, web), (default, web), (web, default)):
            assert connect(src.ns, dst.ip, 8080, timeout=1).returncode != 0, f"{src.hostname} reached {dst.hostname}"
            assert not pings(src.ns, dst.ip)
        assert not pings(web.ns, db_gw) and not pings(web.ns, "10.10.0.1")  # another zone's gateway
        assert pings(web.ns, WEB_GW)  # its own gateway answers
        assert resolve(web.ns, "db-1.db.internal", WEB_GW) == []  # answered locally, never sent upstream
        proximity("zone", "peer", "web", "db", "--sandbox", sb.name)
        assert connect(web.ns, db.ip, 8080).returncode == 0 and connect(db.ns, web.ip, 8080).returncode == 0
        assert resolve(web.ns, "db-1.db.internal", WEB_GW) == [db.ip]  # a peer's names, by their full name
        assert connect(default.ns, web.ip, 8080, timeout=1).returncode != 0  # prox-net is no peer
        proximity("zone", "unpeer", "web", "db", "--sandbox", sb.name)
        assert connect(web.ns, db.ip, 8080, timeout=1).returncode != 0


def test_the_lan_host_routing_to_every_zone_reaches_none(zoned):
    sb, clients = zoned
    db_net = zones(sb)["db"]["subnets"][0]
    routes = [(net, sandboxes.HOST_UPLINK_ADDR.split("/")[0]) for net in (WEB_NET, db_net, "10.10.0.0/24")]
    with Listener(clients["web"].ns, "0.0.0.0", 8081), Listener(clients["db"].ns, "0.0.0.0", 8081):
        for net, via in routes:
            sandboxes.ns_run(sb.lan_ns, ["ip", "route", "replace", net, "via", via])
        try:
            for client in clients.values():
                assert connect(sb.lan_ns, client.ip, 8081, timeout=1).returncode != 0, client.hostname
            assert not pings(sb.lan_ns, WEB_GW)
        finally:
            for net, _ in routes:
                sandboxes.ns_run(sb.lan_ns, ["ip", "route", "del", net], check=False)


def test_a_new_zone_reaches_only_dhcp_dns_and_icmp_of_the_host_until_allowed(zoned):
    """The host's own services (ssh 22, pveproxy 8006, spiceproxy 3128, VNC 5900-5999) are closed to a
    new zone; prox-net keeps reaching them, as it always could; `zone set --host-services` opens them."""
    sb, clients = zoned
    web, default = clients["web"], clients["prox-net"]
    with Listener(sb.name, "0.0.0.0", 8006), Listener(sb.name, "0.0.0.0", 22), Listener(sb.name, "0.0.0.0", 5901):
        for port in (8006, 22, 5901):
            assert connect(web.ns, WEB_GW, port, timeout=1).returncode != 0, port
            assert connect(default.ns, "10.10.0.1", port).returncode == 0, port
        assert pings(web.ns, WEB_GW) and resolve(web.ns, "web-1.web.internal", WEB_GW)  # ICMP and DNS stay open
        proximity("zone", "set", "web", "--host-services", "--sandbox", sb.name)
        try:
            assert connect(web.ns, WEB_GW, 8006).returncode == 0
        finally:
            proximity("zone", "set", "web", "--no-host-services", "--sandbox", sb.name)
        assert connect(web.ns, WEB_GW, 8006, timeout=1).returncode != 0


def test_the_service_heals_a_zone_whose_dnsmasq_was_killed(zoned):
    sb, clients = zoned
    (pid,) = zone_dnsmasqs(sb, "web")
    os.kill(pid, signal.SIGKILL)
    wait_or_fail(lambda: zone_dnsmasqs(sb, "web") != [pid] and not os.path.exists(f"/proc/{pid}/cmdline"), 10,
                 "the killed dnsmasq to be gone")
    report = NetworkManager(sb.settings()).heal()
    assert any("start dnsmasq" in action for action in report.actions), report.actions
    assert len(zone_dnsmasqs(sb, "web")) == 1
    assert resolve(clients["web"].ns, "web-1.web.internal", WEB_GW) == [clients["web"].ip]


def test_down_one_zone_keeps_the_others_and_the_service_leaves_it_down(zoned):
    sb, clients = zoned
    proximity("down", "--zone", "db", "--force", "--sandbox", sb.name)
    try:
        links = sandboxes.ns_run(sb.name, ["ip", "-j", "link"]).stdout
        assert '"pz-db"' not in links and '"pz-web"' in links
        assert "pz-db" not in nft_table(sb.name) and "pz-web" in nft_table(sb.name)
        rows = zones(sb)
        assert rows["db"]["health"] == "down" and rows["web"]["health"] == "healthy", rows
        manager = NetworkManager(sb.settings())
        assert not manager.heal().changed  # the service heals the rest, and leaves db down
        assert '"pz-db"' not in sandboxes.ns_run(sb.name, ["ip", "-j", "link"]).stdout
    finally:
        proximity("up", "--sandbox", sb.name)
    assert zones(sb)["db"]["health"] == "healthy"


def test_zone_delete_refuses_while_in_use_and_then_leaves_nothing(zoned):
    sb, _ = zoned
    proximity("zone", "create", "tmp", "--ipv6", "off", "--sandbox", sb.name)
    manager = NetworkManager(sb.settings())
    view = next(v for v in manager.zones(manager.observe())[0].views() if v.zone == "tmp")
    files = [view.interfaces_file, view.dnsmasq_conf, view.zone_dir]
    assert all(path.exists() for path in files)
    Reservations(view, manager.host).reserve("app-1", [])
    refused = proximity("zone", "delete", "tmp", "--sandbox", sb.name, check=False)
    assert refused.returncode == 2 and "app-1" in refused.stderr and "--force" in refused.stderr
    assert view.interfaces_file.exists() and "pz-tmp" in nft_table(sb.name)
    proximity("zone", "delete", "tmp", "--force", "--sandbox", sb.name)
    assert not any(path.exists() for path in files), [p for p in files if p.exists()]
    assert '"pz-tmp"' not in sandboxes.ns_run(sb.name, ["ip", "-j", "link"]).stdout
    assert "pz-tmp" not in nft_table(sb.name) and zone_dnsmasqs(sb, "tmp") == []
    assert "tmp" not in zones(sb) and "tmp" not in sb.settings().zones_file.read_text()


def test_proxmox_writer_over_three_zones_then_up_is_a_no_op_and_down_restores_the_file(zoned):
    """Last in the module: it takes every zone down."""
    sb, clients = zoned
    rewrite = PveRewrite()
    try:
        written, original = rewrite(sb.interfaces_file.read_text()), rewrite(ORIGINAL[sb.name])
    finally:
        rewrite.close()
    assert "source /etc/network/interfaces.d/*" in written  # what makes the zones' own files read
    sb.interfaces_file.write_text(written)
    pve_host.ifreload(sb.name)  # "Apply Configuration"
    for client in clients.values():  # ifreload -a took the clients' ports off their bridges; Proximity's own
        sandboxes.detach_client(sb, client.hostname)  # containers' ports are put back by `up`, these are not
    assert "Nothing to do" in proximity("up", "--sandbox", sb.name).stdout
    rows = zones(sb)
    assert all(row["health"] == "healthy" for row in rows.values()), rows
    for zone in ("web", "db"):
        proximity("zone", "delete", zone, "--force", "--sandbox", sb.name)
    proximity("down", "--purge", "--force", "--sandbox", sb.name)
    assert sb.interfaces_file.read_text() == original  # the file as Proxmox would have written it without us
    assert not list((sb.interfaces_file.parent / "interfaces.d").glob("proximity-*"))
    assert nft_table(sb.name) is None
