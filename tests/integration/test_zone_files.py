"""With only the default zone and IPv6 not requested, `up` writes what today's release wrote, apart from
the firewall; a further zone uses files, directories and a service name of its own.

RELEASE_FILES is what the release before zones (236c542, the last commit before issue 16's work)
wrote on a fresh sandbox with `up`, listed by running it (PYTHONPATH=<its src> proximity up).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from proximity.network import interfaces, render
from proximity.spec.view import default_view
from tests.integration.tools import proximity

SANDBOX_FILES = {  # the sandbox's own, before Proximity
    "etc/network/interfaces", "etc/network/ifupdown2/addons.conf", "etc/network/ifupdown2/ifupdown2.conf",
    "run/upstream-dns.pid", "sandbox.json", "upstream-dns.log", "var/lib/ifupdown2/ifstatenew",
}
RELEASE_FILES = {
    "etc/proximity/dnsmasq.conf", "run/proximity-dns.pid", "run/proximity-dns.state",
    "var/lib/proximity/dhcp-hosts", "var/lib/proximity/dnsmasq.leases", "var/lib/proximity/hosts",
    "var/lib/proximity/intent.json", "var/lib/proximity/probe.json", "var/lib/proximity/proximity-dns.log",
    "var/lib/proximity/proximity.lock",
}
# The firewall's: the ruleset the stanza's post-up loads, and the record of what was applied (the
# digests `up` compares; the issue asks for the ruleset file alone, see the closing note).
FIREWALL_FILES = {"etc/proximity/proximity.nft", "var/lib/proximity/ruleset.json"}
BACKUP = re.compile(r"var/lib/proximity/backups/interfaces\.\d{8}T\d{6}\.\d{6}Z")
# The release's stanza, less its eight iptables post-up/post-down lines.
RELEASE_STANZA = ["auto prox-net", "iface prox-net inet static", "\taddress 10.10.0.1/24", "\tbridge-ports none",
                  "\tbridge-stp off", "\tbridge-fd 0", "\thwaddress {mac}", "\tpost-up echo 1 > /proc/sys/net/ipv4/ip_forward"]


def files(sb) -> set[str]:
    return {str(p.relative_to(sb.root)) for p in sb.root.rglob("*") if p.is_file()}


def stanza(text: str) -> list[str]:
    start, end = interfaces.find_block(text)
    return [line for line in text[start:end].splitlines() if line and not line.startswith("# proximity:managed")]


@pytest.fixture(scope="module")
def up(sandbox):
    proximity("up", "--sandbox", sandbox.name)
    yield sandbox
    proximity("zone", "delete", "web", "--force", "--sandbox", sandbox.name, check=False)
    proximity("down", "--purge", "--force", "--sandbox", sandbox.name, check=False)


def test_the_default_zone_alone_writes_the_release_files_and_the_ruleset(up):
    sb = up
    found = files(sb)
    backups = {f for f in found if BACKUP.fullmatch(f)}
    assert len(backups) == 1, backups
    assert found - backups == SANDBOX_FILES | RELEASE_FILES | FIREWALL_FILES
    # nothing of the zones: no allocations, no zones.toml, no zone file, no zone directory
    for path in ("var/lib/proximity/zones.json", "etc/proximity/zones.toml", "etc/proximity/zones",
                 "var/lib/proximity/zones"):
        assert not (sb.root / path).exists(), path
    assert not list((sb.interfaces_file.parent / "interfaces.d").glob("proximity-*"))


def test_the_default_zone_keeps_the_release_stanza_but_for_the_firewall_line(up):
    sb = up
    settings = sb.settings()
    lines = stanza(sb.interfaces_file.read_text())
    assert lines == render.bridge_stanza(default_view(settings))
    mac = render.bridge_mac(settings)
    assert lines == [line.format(mac=mac) for line in RELEASE_STANZA] + [f"\tpost-up nft -f {settings.ruleset_file}"]
    assert "inet6" not in sb.interfaces_file.read_text().split("# proximity:managed")[0].split("auto prox-net")[1]
    row = next(r for r in json.loads(proximity("zone", "list", "--json", "--sandbox", sb.name).stdout))
    assert row["name"] == "prox-net" and row["service"] == "proximity-dns" and row["subnets"] == ["10.10.0.0/24"]
    assert row["bridge"] == "prox-net" and row["domain"] == "prox.local"
    # the unit a systemd host gets: today's name and path
    assert list(render.dns_unit_files(default_view(settings), True)) == [settings.systemd_dir / "proximity-dns.service"]


def test_a_new_zone_uses_directories_and_a_service_of_its_own(up):
    sb = up
    before = files(sb)
    default_files = {f: (sb.root / f).read_bytes() for f in before if f.startswith("var/lib/proximity/")
                     and not BACKUP.fullmatch(f) and f.rsplit("/", 1)[-1] in ("dhcp-hosts", "hosts", "dnsmasq.leases")}
    proximity("zone", "create", "web", "--ipv6", "off", "--sandbox", sb.name)
    new = {f for f in files(sb) - before if not BACKUP.fullmatch(f)}
    own = re.compile(r"etc/network/interfaces\.d/proximity-web|etc/proximity/zones/web\.conf"
                     r"|var/lib/proximity/zones/web/[^/]+|run/proximity-dns@web\.(pid|state)"
                     r"|etc/proximity/zones\.toml|var/lib/proximity/zones\.json")
    assert {f for f in new if not own.fullmatch(f)} == set(), new
    assert {"etc/network/interfaces.d/proximity-web", "etc/proximity/zones/web.conf",
            "var/lib/proximity/zones/web/dhcp-hosts", "run/proximity-dns@web.pid"} <= new, new
    assert {f: (sb.root / f).read_bytes() for f in default_files} == default_files  # prox-net's own, untouched
    show = json.loads(proximity("zone", "show", "web", "--json", "--sandbox", sb.name).stdout)
    assert show["service"] == "proximity-dns@web" and show["bridge"] == "pz-web"
    assert Path(show["dnsmasq_conf"]) == sb.dnsmasq_conf.parent / "zones" / "web.conf"
    assert Path(show["leases_file"]).parent == sb.state_dir / "zones" / "web"
    assert Path(show["interfaces_file"]) == sb.interfaces_file.parent / "interfaces.d" / "proximity-web"
    text = Path(show["interfaces_file"]).read_text()
    assert text.count("iface pz-web inet static") == 1 and "# proximity:managed" in text
    # the default zone's stanza did not move: still in the host's file, still the same
    assert stanza(sb.interfaces_file.read_text()) == render.bridge_stanza(default_view(sb.settings()))
