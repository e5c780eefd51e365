"""Zones attacked as a hostile (or careless) admin would: bad names, overlapping subnets, a bridge that is
someone else's, damaged zones.json and zones.toml, a zone in both files, the default zone deleted, a
missing `source` line, a full disk, Proxmox's writer over a host with zones.

Each is refused with a message that names the field (or file) and the fix, exit code 2 for refused
input (1 for a damaged state file or a full disk, as everywhere else), never a traceback, and nothing
half-applied: the interfaces file, the zone files, zones.toml, zones.json, the links and the table are
as they were.
"""

from __future__ import annotations

import json
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from proximity import sandbox as sandboxes
from proximity.sandbox import pve_host
from tests.integration.conftest import unique_name
from tests.integration.tools import nft_table, proximity, small_disk_sandbox
from tests.unit.pve_rewrite import PveRewrite

WEB_NET = "10.20.0.0/24"


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    """A sandbox whose state, run and /etc/proximity directories are small tmpfs mounts (to fill them),
    with prox-net and zone web up."""
    name = unique_name("pz")
    with small_disk_sandbox(name, lambda: tmp_path_factory.mktemp("keep")) as box:
        proximity("up", "--sandbox", name)
        proximity("zone", "create", "web", "--subnet", WEB_NET, "--ipv6", "off", "--sandbox", name)
        yield box


def run(sb, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    result = proximity(*args, "--sandbox", sb.name, check=False, env=env)
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


def host_state(sb) -> dict:
    """What a refused command must leave as it was."""
    zone_dir = sb.interfaces_file.parent / "interfaces.d"
    etc = sb.dnsmasq_conf.parent
    read = lambda p: p.read_bytes() if p.exists() else None  # noqa: E731
    links = sorted(link["ifname"] for link in json.loads(sandboxes.ns_run(sb.name, ["ip", "-j", "link"]).stdout))
    return {"interfaces": read(sb.interfaces_file),
            "zone files": {p.name: p.read_bytes() for p in sorted(zone_dir.glob("*"))} if zone_dir.exists() else {},
            "zones.toml": read(etc / "zones.toml"), "zones.json": read(sb.state_dir / "zones.json"),
            "dnsmasq confs": sorted(p.name for p in (etc / "zones").glob("*")),
            "zone dirs": sorted(p.name for p in (sb.state_dir / "zones").glob("*")),
            "links": links, "table": nft_table(sb.name)}


@contextmanager
def unchanged(sb):
    before = host_state(sb)
    yield
    after = host_state(sb)
    assert after == before, {key: (before[key], after[key]) for key in before if before[key] != after[key]}


def refused(sb, *args: str, code: int = 2, says: tuple[str, ...] = (), env: dict | None = None) -> str:
    with unchanged(sb):
        result = run(sb, *args, env=env)
    assert result.returncode == code, (args, result.returncode, result.stdout, result.stderr)
    message = result.stderr + result.stdout
    for words in says:
        assert words in message, (args, words, message)
    return message


@pytest.mark.parametrize("name", ["Web", "a_b", "1abc", "abc-", "x" * 33, "web.evil", "bad/../name"])
def test_bad_zone_names_are_refused_naming_the_rule(sb, name):
    refused(sb, "zone", "create", name, says=("zone name", "lowercase letters"))


@pytest.mark.parametrize("subnet, other", [
    (WEB_NET, "zone web"), ("10.20.0.128/25", "zone web"), ("10.16.0.0/12", "zone web"),
    ("10.10.0.0/24", "zone prox-net"), ("10.0.0.0/8", "zone prox-net"),
    ("198.51.100.0/24", "vmbr0"), ("198.51.100.128/25", "vmbr0"),
])
def test_an_overlapping_subnet_is_refused_naming_both_sides(sb, subnet, other):
    message = refused(sb, "zone", "create", "db", "--subnet", subnet, "--ipv6", "off",
                      says=("zone db's subnet", other, "pick another subnet", "--subnet"))
    assert "Traceback" not in message


def test_a_bad_subnet_domain_range_or_ipv6_is_refused_naming_the_field(sb):
    refused(sb, "zone", "create", "db", "--subnet", "nonsense", says=("zones.db.subnet", "10.10.1.0/24"))
    refused(sb, "zone", "create", "db", "--subnet", "10.30.0.0/24", "--dhcp-range", "10.99.0.10-10.99.0.20",
            says=("dhcp_range",))
    refused(sb, "zone", "create", "db", "--ipv6", "sometimes", says=("ipv6", "auto"))
    refused(sb, "zone", "create", "db", "--domain", "prox.local", says=("prox.local", "domain"))
    refused(sb, "zone", "set", "web", "--subnet", "10.10.0.0/24", says=("zone prox-net",))


def test_a_bridge_declared_by_the_admin_is_refused_naming_the_stanza(sb):
    """The admin's own pz-lab, in the host's file or in a file of interfaces.d: zone lab would share it."""
    original = sb.interfaces_file.read_text()
    theirs = sb.interfaces_file.parent / "interfaces.d" / "lab"
    stanza = "\nauto pz-lab\niface pz-lab inet manual\n\tbridge-ports none\n"
    try:
        sb.interfaces_file.write_text(original + stanza)
        refused(sb, "zone", "create", "lab", "--ipv6", "off",
                says=(str(sb.interfaces_file), "declares pz-lab", "Delete or rename that stanza"))
        sb.interfaces_file.write_text(original)
        theirs.write_text(stanza)
        refused(sb, "zone", "create", "lab", "--ipv6", "off", says=(str(theirs), "declares pz-lab"))
    finally:
        sb.interfaces_file.write_text(original)
        theirs.unlink(missing_ok=True)


def test_two_long_names_with_one_hashed_bridge_are_refused(sb):
    """pz- + the first 6 characters + 20 bits of hash: these two names share pz-longzo_5b9ed."""
    assert run(sb, "zone", "create", "longzone-2055", "--ipv6", "off").returncode == 0
    try:
        refused(sb, "zone", "create", "longzone-2447", "--ipv6", "off",
                says=("pz-longzo_5b9ed is zone longzone-2055's bridge too", "rename zone longzone-2447"))
    finally:
        assert run(sb, "zone", "delete", "longzone-2055").returncode == 0


def test_a_damaged_zones_json_stops_every_change_and_names_the_file(sb):
    path = sb.state_dir / "zones.json"
    good = path.read_bytes() if path.exists() else None  # none: web's subnet is given and nothing has IPv6
    try:
        for bad in (b"{", b"[]", b'{"version": 1, "ula": "nonsense", "zones": {}}', b"", b"\xff\xfe"):
            path.write_bytes(bad)
            for args in (("up",), ("zone", "create", "db", "--ipv6", "off"), ("zone", "delete", "web", "--force")):
                refused(sb, *args, code=1, says=(str(path), "restore it from a backup, or move it away"))
    finally:
        path.write_bytes(good) if good is not None else path.unlink()
    assert run(sb, "up").returncode == 0


@pytest.mark.parametrize("bad, says", [
    ("zones = [", "cannot read"),
    ("junk = 1", "junk is not for this file"),
    ("zones = 5", "is not a set of [zones.NAME] tables"),
    ("[zones.web]\nsubnet = 'bad'", "zones.web.subnet"),
    ("[zones.Web]", "zone name 'Web'"),
    ("[zones.web]\nbogus = 1", "'bogus' is not a setting"),
    ("[zones.prox-net]", "is the default zone"),
    (f"peers = [['web', 'nosuch']]\n[zones.web]\nsubnet = '{WEB_NET}'\nipv6 = 'off'", "'nosuch', which is no zone"),
])
def test_a_damaged_zones_toml_is_refused_naming_that_file(sb, bad, says):
    path = sb.dnsmasq_conf.parent / "zones.toml"
    good = path.read_bytes()
    try:
        path.write_text(bad + "\n")
        for args in (("up",), ("zone", "create", "db", "--ipv6", "off"), ("down", "--zone", "web")):
            refused(sb, *args, says=(str(path), says))
    finally:
        path.write_bytes(good)


def test_a_zone_in_both_files_is_refused_naming_both(sb, tmp_path):
    config = tmp_path / "proximity.toml"
    config.write_text('[zones.web]\nsubnet = "10.30.0.0/24"\n')
    env = {"PROXIMITY_CONFIG": str(config)}
    for args in (("up",), ("zone", "create", "db", "--ipv6", "off")):
        refused(sb, *args, env=env, says=("web", str(config), "zones.toml", "keep one"))


def test_a_peer_in_proximity_toml_names_existing_zones_and_keeps_its_zone(sb, tmp_path):
    config = tmp_path / "proximity.toml"
    config.write_text('peers = [["web", "wbe"]]\n')  # misspelt: it would peer nothing, silently
    refused(sb, "up", env={"PROXIMITY_CONFIG": str(config)}, says=("'wbe', which is no zone", str(config)))
    config.write_text('peers = [["web", "prox-net"]]\n')
    refused(sb, "zone", "delete", "web", "--force", env={"PROXIMITY_CONFIG": str(config)},
            says=("zone web is peered in", str(config), "delete the pair"))


def test_what_cannot_be_done_to_zones_is_refused(sb):
    refused(sb, "zone", "delete", "prox-net", says=("prox-net cannot be deleted", "proximity down"))
    refused(sb, "zone", "delete", "nosuch", says=("no zone 'nosuch'", "prox-net, web"))
    refused(sb, "down", "--zone", "nosuch", says=("no zone 'nosuch'", "zone list"))
    refused(sb, "zone", "peer", "web", "web", says=("two different zones",))
    refused(sb, "zone", "peer", "web", "nosuch", says=("no zone 'nosuch'",))
    refused(sb, "zone", "create", "web", says=("exists already", "zone set web"))
    refused(sb, "zone", "set", "prox-net", "--subnet", "10.40.0.0/24", says=("only --ipv6", "gateway"))


def test_a_missing_source_line_refuses_zone_create_naming_the_line(sb):
    original = sb.interfaces_file.read_text()
    assert "source /etc/network/interfaces.d/*" in original
    try:
        sb.interfaces_file.write_text(original.replace("source /etc/network/interfaces.d/*\n", ""))
        refused(sb, "zone", "create", "db", "--ipv6", "off",
                says=("does not read", "add the line `source ", "interfaces.d/*`"))
        refused(sb, "up", says=("add the line `source ",))
    finally:
        sb.interfaces_file.write_text(original)
    assert run(sb, "up").returncode == 0


def _fill(directories: list[Path]) -> list[Path]:
    fillers = [d / "filler" for d in directories]
    for filler in fillers:
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=16k"], capture_output=True)  # until ENOSPC
    return fillers


@pytest.mark.parametrize("full", ["everything", "state"])
def test_zone_create_on_a_full_disk_is_refused_and_undone(sb, full):
    """Every mount full (zones.toml cannot be written), or only the state directory (zones.toml is
    written first, then zones.json and the zone's directory fail: zones.toml is put back)."""
    directories = [sb.state_dir] if full == "state" else [sb.state_dir, sb.run_dir, sb.dnsmasq_conf.parent]
    fillers = _fill(directories)
    try:
        message = refused(sb, "zone", "create", "db", "--ipv6", "off", code=1)
        assert "full" in message or "free" in message or "No space" in message, message
    finally:
        for filler in fillers:
            filler.unlink(missing_ok=True)
    assert run(sb, "up").returncode == 0
    assert "Nothing to do" in run(sb, "up").stdout


def test_proxmox_writer_over_a_host_with_zones_then_zone_create_and_delete(sb):
    """Proxmox's writer rewrites the host's file (the zones' own files are not its): `up` is then a
    no-op, and a zone made and deleted after it leaves the file as the writer wrote it."""
    rewrite = PveRewrite()
    try:
        written = rewrite(sb.interfaces_file.read_text())
    finally:
        rewrite.close()
    assert "source /etc/network/interfaces.d/*" in written and "iface pz-web" not in written
    sb.interfaces_file.write_text(written)
    pve_host.ifreload(sb.name)  # "Apply Configuration"
    assert "Nothing to do" in run(sb, "up").stdout
    assert run(sb, "zone", "create", "db", "--ipv6", "off").returncode == 0
    assert sb.interfaces_file.read_text() == written
    assert run(sb, "zone", "delete", "db").returncode == 0
    assert sb.interfaces_file.read_text() == written and "Nothing to do" in run(sb, "up").stdout
    rows = json.loads(run(sb, "zone", "list", "--json").stdout)
    assert [(r["name"], r["health"]) for r in rows] == [("prox-net", "healthy"), ("web", "healthy")], rows
