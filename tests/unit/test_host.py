import os
import subprocess
import stat

import pytest

from proximity.errors import InputError
from proximity.host import DryRunHost, Host
from proximity.network.reconciler import NetworkManager
from proximity.settings import load_settings


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_atomic_write_keeps_mode_and_owner(tmp_path):
    path = tmp_path / "interfaces"
    path.write_text("auto lo\n")
    os.chmod(path, 0o640)
    os.chown(path, 1, 1)
    Host().write_text(path, "auto lo\niface lo inet loopback\n")
    st = path.stat()
    assert path.read_text() == "auto lo\niface lo inet loopback\n"
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1, 1)
    assert [p.name for p in tmp_path.iterdir()] == ["interfaces"]  # no temp file left behind


def test_dry_run_host_records_and_changes_nothing(tmp_path):
    path = tmp_path / "conf"
    path.write_text("old\n")
    host = DryRunHost()
    host.write_text(path, "new\n")
    host.run(["ifreload", "-a"])
    assert path.read_text() == "old\n"
    assert host.read_text(path) == "new\n"  # later steps see the planned content
    assert host.files == [{"path": str(path), "before": "old\n", "after": "new\n"}]
    assert host.commands == [["ifreload", "-a"]]


def test_container_network_config():
    manager = NetworkManager(load_settings(), dry_run=True)
    assert manager.get_container_network_config("nginx-01") == "name=eth0,bridge=prox-net,ip=dhcp,firewall=1"
    for bad in ("-nginx", "nginx_01", "x" * 64, "", "nginx\n"):
        with pytest.raises(InputError, match="RFC 1123"):
            manager.get_container_network_config(bad)
    for bad in ("101", "localhost"):  # the one hostname check (settings.check_hostname)
        with pytest.raises(InputError, match="all digits|reserved"):
            manager.get_container_network_config(bad)


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path):
    path = tmp_path / "interfaces"
    dead = _dead_pid()
    stale = tmp_path / f".interfaces.{dead}-{dead}.proximity-tmp"
    stale.write_text("half")
    alive = tmp_path / f".interfaces.{os.getpid()}-1.proximity-tmp"  # a live writer's: kept
    alive.write_text("in progress")
    Host().write_text(path, "auto lo\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["interfaces", alive.name])


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
