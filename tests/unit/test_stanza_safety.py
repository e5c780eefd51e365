"""What is not Proximity's stays so: stanzas in sourced files, a bridge with a LAN port, the GUI's inet6
stanza, a symlinked interfaces file, reserved DHCP names, and deletes of what is already gone."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from proximity.errors import ConflictError, HostError
from proximity.host import Host
from proximity.network import interfaces, render
from proximity.network.bridge_changes import DeleteLink
from proximity.network.changes import DeleteRule, Env, WriteFile
from proximity.network.health import health
from proximity.network.plan import plan_down
from proximity.network.reconciler import NetworkManager
from proximity.settings import RESERVED_HOSTNAMES, SettingsError
from tests.unit.pve_rewrite import PveRewrite
from tests.unit.test_plan import SETTINGS, converged_host, fresh_host, make_settings, plan_of

ADMIN = "/etc/network/interfaces.d/lan-bridge"
ADMIN_STANZA = """# the lab's own bridge
auto prox-net
iface prox-net inet static
\taddress 192.168.77.1/24
\tbridge-ports eno2
"""


@pytest.fixture(scope="module")
def pve_rewrite():
    rewrite = PveRewrite()
    yield rewrite
    rewrite.close()


# -- the files ifupdown2 reads --------------------------------------------------------------------
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path / "interfaces"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (IsADirectoryError, FileNotFoundError):
        return None


def _sourced(main: Path) -> list[str]:
    from proximity.network.stanzas import sourced_files

    found = sourced_files(main, main.read_text(), _read, Host().glob)
    return [str(f.path.relative_to(main.parent)) for f in found]


def test_source_takes_a_sorted_glob_relative_to_the_sourcing_file(tmp_path):
    main = _tree(tmp_path, {"interfaces": "source interfaces.d/*\n", "interfaces.d/b": "", "interfaces.d/a.cfg": ""})
    assert _sourced(main) == ["interfaces.d/a.cfg", "interfaces.d/b"]


def test_source_directory_reads_only_names_ifupdown2_accepts(tmp_path):
    main = _tree(tmp_path, {"interfaces": f"source-directory {tmp_path}/d\n", "d/admin": "", "d/x.dpkg-old": "",
                            "d/backup~": "", "d/my_lan-2": ""})
    assert _sourced(main) == ["d/admin", "d/my_lan-2"]


def test_sourced_files_are_read_recursively_and_a_loop_stops(tmp_path):
    main = _tree(tmp_path, {"interfaces": "source a\n", "a": "source sub/b\n", "sub/b": "source ../a\nsource ../interfaces\n"
                            "iface prox-net inet static\n\taddress 192.168.77.1/24\n"})
    from proximity.network.stanzas import declared_in, sourced_files

    assert _sourced(main) == ["a", "sub/b"]
    found = sourced_files(main, main.read_text(), _read, Host().glob)
    ((where, stanza),) = declared_in(found, "prox-net")
    assert where.path == tmp_path / "sub/b" and stanza.first_line == 3 and where.via == tmp_path / "a"


# -- a stanza of the bridge elsewhere ---------------------------------------------------------------
def test_up_refuses_a_bridge_declared_in_a_sourced_file_naming_file_and_line():
    host = fresh_host()
    host.files[ADMIN] = ADMIN_STANZA
    with pytest.raises(ConflictError, match=rf"{ADMIN} line 3 declares prox-net too"):
        NetworkManager(SETTINGS, host=host).up()
    assert host.commands == []  # nothing written, no dnsmasq


def test_status_is_unhealthy_and_down_keeps_the_admins_bridge_when_it_is_declared_elsewhere():
    host = converged_host()
    host.files[ADMIN] = ADMIN_STANZA
    obs = NetworkManager(SETTINGS, host=host).observe(probe=True)
    status = health(SETTINGS, obs)
    assert status.health_status == "unhealthy"
    assert any(f"{ADMIN} line 3" in reason for reason in status.reasons)
    plan = plan_down(SETTINGS, obs)
    assert not any(isinstance(change, DeleteLink) for change in plan.changes)


def test_a_lan_port_on_the_bridge_makes_up_refuse_and_status_unhealthy():
    host = converged_host()
    host.add_link("eno2", master=SETTINGS.bridge)
    with pytest.raises(ConflictError, match="not a container's \\(eno2\\)"):
        plan_of(host)
    status = health(SETTINGS, NetworkManager(SETTINGS, host=host).observe(probe=True))
    assert status.health_status == "unhealthy" and any("eno2" in r for r in status.reasons)


def test_dnsmasq_is_not_started_when_a_lan_port_appears_during_up():
    host = fresh_host()
    real = host._apply_interfaces

    def merge_the_admins_stanza(only):  # what ifreload does with a stanza the plan could not see
        real(only)
        host.add_link("eno2", master=SETTINGS.bridge)

    host._apply_interfaces = merge_the_admins_stanza
    with pytest.raises(HostError, match="dnsmasq was not started"):
        NetworkManager(SETTINGS, host=host).up()
    assert host.processes == {}


def test_guest_ports_are_not_lan_ports():
    host = converged_host()
    for name in ("veth205i0", "tap300i1", "fwpr101p0", "pxc3", "pxp4242"):
        host.add_link(name, master=SETTINGS.bridge)
    assert health(SETTINGS, NetworkManager(SETTINGS, host=host).observe()).health_status == "healthy"


# -- Proxmox's GUI adds IPv6 as a stanza of its own ----------------------------------------------------
def _with_ipv6(text: str, pve_rewrite) -> str:
    """What Proxmox writes when IPv6 is set on prox-net in its GUI: the bridge's inet6 stanza after it."""
    return pve_rewrite(text + "\niface prox-net inet6 static\n\taddress fd42:10::1/64\n")


def test_the_guis_inet6_stanza_is_kept_by_up_and_removed_by_down(pve_rewrite):
    host = converged_host()
    path = str(SETTINGS.interfaces_file)
    host.files[path] = _with_ipv6(host.files[path], pve_rewrite)
    assert "iface prox-net inet6 static" in host.files[path]
    manager = NetworkManager(SETTINGS, host=host)
    assert not plan_of(host)  # up is a no-op with it
    assert manager.up().actions == []
    manager.down(force=True)  # the fake host runs web-01: cut off on purpose
    assert "prox-net" not in host.files[path]
    assert "iface vmbr0 inet static" in host.files[path] and "source /etc/network/interfaces.d/*" in host.files[path]


def test_remove_stanzas_takes_every_family_and_leaves_the_rest_byte_for_byte():
    text = "auto lo\niface lo inet loopback\n\niface prox-net inet6 static\n\taddress fd42::1/64\n\nsource x\n"
    assert interfaces.remove_stanzas(text, "prox-net") == "auto lo\niface lo inet loopback\n\nsource x\n"
    assert interfaces.remove_stanzas(text, "vmbr9") == text


# -- a symlinked interfaces file ---------------------------------------------------------------------
def test_a_symlinked_file_is_written_through_its_link_atomically_in_the_targets_directory(tmp_path):
    (tmp_path / "cm").mkdir()
    target = tmp_path / "cm" / "interfaces"
    target.write_text("auto lo\n")
    link = tmp_path / "interfaces"
    link.symlink_to(target)
    host = Host()
    WriteFile(link, "auto lo\niface lo inet loopback\n", "auto lo\n", backup=True).apply(
        Env(host, make_settings(state_dir=str(tmp_path / "state")), None))
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "auto lo\niface lo inet loopback\n"
    assert [p.read_text() for p in (tmp_path / "state" / "backups").iterdir()] == ["auto lo\n"]
    assert sorted(p.name for p in (tmp_path / "cm").iterdir()) == ["interfaces"]  # no temp file left


# -- reserved names -----------------------------------------------------------------------------------
def test_dnsmasq_ignores_every_reserved_name_and_its_config_passes_dnsmasq_test(tmp_path):
    conf = render.dnsmasq_conf(SETTINGS)
    for name in RESERVED_HOSTNAMES:
        assert f"dhcp-name-match=set:reserved_name,{name}\n" in conf
    assert "dhcp-ignore-names=tag:reserved_name\n" in conf
    (tmp_path / "dnsmasq.conf").write_text(conf)
    result = subprocess.run([render.dnsmasq_binary(), "--test", f"--conf-file={tmp_path / 'dnsmasq.conf'}"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# -- deleting what is already gone --------------------------------------------------------------------
def docker_host():
    """Converged where iptables' FORWARD policy drops: Proximity's accepts are iptables rules there."""
    host = fresh_host()
    host.chains.update({"FORWARD": "DROP", "DOCKER-USER": "-"})
    NetworkManager(SETTINGS, host=host).up()
    assert host.rules
    return host


def test_a_rule_or_link_gone_between_check_and_delete_is_converged():
    host = docker_host()
    env = Env(host, SETTINGS, None)
    rule = host.rules[0]
    real_query = host.query

    def vanish_after_check(argv, timeout=15, input=None):  # another process deletes it right after -C
        result = real_query(argv, timeout, input)
        if "-C" in argv and rule in host.rules:
            host.rules.remove(rule)
        return result

    host.query = vanish_after_check
    DeleteRule(rule).apply(env)  # iptables -D says "Bad rule": already converged
    real_ip_json = host.ip_json

    def vanish_after_listing(*args):  # ... and the bridge right after Proximity saw it
        links = real_ip_json(*args)
        host._delete_link(SETTINGS.bridge)
        return links

    host.ip_json = vanish_after_listing
    DeleteLink(SETTINGS.bridge).apply(env)
    assert SETTINGS.bridge not in host.links


def test_a_delete_that_fails_while_the_thing_is_still_there_is_an_error():
    host = docker_host()
    host.fail = lambda argv: argv[0] == "iptables" and "-D" in argv
    with pytest.raises(HostError, match="injected failure"):
        DeleteRule(host.rules[0]).apply(Env(host, SETTINGS, None))


def test_a_killed_writers_temp_file_of_another_name_is_removed_by_the_next_write(tmp_path):
    """A backup has a new name each time: kill -9 during one left its temp file forever (test_kill saw it)."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = tmp_path / f".interfaces.20261202T053328.338275Z.{dead.pid}-{dead.pid}.proximity-tmp"
    leftover.write_text("half a backup")
    alive = tmp_path / f".interfaces.20261202T053329.0Z.{os.getpid()}-1.proximity-tmp"
    alive.write_text("being written")
    Host().write_text(tmp_path / "interfaces.20261202T053330.0Z", "a backup\n")
    assert not leftover.exists() and alive.exists()


def test_down_also_removes_the_inet6_stanza_from_pending_gui_changes(pve_rewrite):
    host = converged_host()
    pending = str(SETTINGS.pending_interfaces_file)
    host.files[pending] = _with_ipv6(host.files[str(SETTINGS.interfaces_file)], pve_rewrite)
    assert not plan_of(host)  # the pending file already has Proximity's stanza, and the GUI's inet6 one
    NetworkManager(SETTINGS, host=host).down(force=True)  # web-01 runs in the fake host
    assert "prox-net" not in host.files[pending]


def test_an_address_in_the_subnet_declared_in_a_sourced_file_is_a_clash():
    host = fresh_host()
    host.files["/etc/network/interfaces.d/lab"] = "auto vmbr1\niface vmbr1 inet static\n\taddress 10.10.0.5/24\n"
    with pytest.raises(SettingsError, match="address 10.10.0.5/24 declared for vmbr1 in /etc/network/interfaces.d/lab"):
        plan_of(host)
