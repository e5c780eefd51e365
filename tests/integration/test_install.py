"""scripts/install.sh: a system-wide install staged in a temporary root, used on a sandbox, then removed.

Never the machine's own /opt, /usr/local/bin, /etc or /etc/network/interfaces: every file is under
a temporary --root (a staging root: the files name the final paths, so the staged program runs as
PREFIX/bin/python -m proximity), and `proximity down` of the uninstall acts on a sandbox
(PROXIMITY_SANDBOX).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .tools import proximity

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "install.sh"
# The directories a Debian host has before the install; the install and uninstall leave them as found.
SKELETON = ("opt", "usr/local/bin", "etc/systemd/system", "var/lib", "run")


def tree(root: Path) -> dict[str, tuple]:
    """Every path under root with its type, mode and, for files, a hash of the content."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        content = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(info.st_mode) else None
        found[str(path.relative_to(root))] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), content)
    return found


def install(*args: str, sandbox: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROXIMITY_")}
    if sandbox:  # the uninstall's `proximity down` acts on this sandbox, not on the machine
        env["PROXIMITY_SANDBOX"] = sandbox
    result = subprocess.run([str(INSTALL), *args], capture_output=True, text=True, timeout=600, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"install.sh {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def staged(root: Path, *args: str) -> list[str]:
    """The staged program, run from where it is (its own scripts name /opt/proximity)."""
    return [str(root / "opt/proximity/bin/python"), "-m", "proximity", *args]


def skeleton(root: Path) -> Path:
    for directory in SKELETON:
        (root / directory).mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return skeleton(tmp_path_factory.mktemp("install-root"))


@pytest.fixture(scope="module")
def installed(root: Path) -> Iterator[tuple[Path, dict, subprocess.CompletedProcess]]:
    """(root, its tree before the install, the install's output)."""
    before = tree(root)
    result = install("--root", str(root))
    yield root, before, result
    install("--uninstall", "--keep-network", "--root", str(root), check=False)  # after a failed test


def test_dry_run_changes_nothing_and_names_the_lock(tmp_path):
    root = skeleton(tmp_path)
    before = tree(root)
    result = install("--root", str(root), "--dry-run")
    assert tree(root) == before
    assert f"--require-hashes -r {REPO}/requirements.lock" in result.stdout
    assert f"would write: {root}/usr/local/bin/proximity" in result.stdout
    assert f"would write: {root}/etc/systemd/system/proximity-api.service" in result.stdout


def test_the_install_makes_a_venv_a_command_and_a_unit_that_name_the_final_paths(installed):
    root, _, result = installed
    prefix, command = root / "opt/proximity", root / "usr/local/bin/proximity"
    assert (prefix / "pyvenv.cfg").is_file(), "a virtual environment, not the system Python"
    help_text = subprocess.run(staged(root, "--help"), capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0 and "Usage" in help_text.stdout, help_text.stderr
    assert 'exec /opt/proximity/bin/proximity "$@"' in command.read_text()
    assert (prefix / "bin/proximity").read_text().startswith("#!/opt/proximity/bin/python")
    # A staging root: no file names it, so the tree works once copied to /.
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and "__pycache__" not in path.parts:
            assert str(root).encode() not in path.read_bytes(), f"{path} names the staging root"
    # Exactly the locked versions.
    frozen = subprocess.run(staged(root)[:1] + ["-m", "pip", "freeze", "--all"], capture_output=True, text=True,
                            timeout=60, check=True).stdout.lower()
    lock = (REPO / "requirements.lock").read_text().lower()
    for pin in ("pydantic==", "fastapi==", "cryptography==", "proxmoxer=="):
        locked = next(line.split()[0] for line in lock.splitlines() if line.startswith(pin))
        assert locked in frozen.splitlines(), f"{locked} is not what was installed"

    unit = (root / "etc/systemd/system/proximity-api.service").read_text()
    assert "ExecStart=/usr/local/bin/proximity serve --host 127.0.0.1 --port 8080" in unit and "[Install]" in unit
    # No token in a staged tree (every host copied from it would share it): each host makes its own.
    assert not (root / "etc/proximity/api-token").exists() and "no API token in the staging root" in result.stdout


def test_without_systemd_the_unit_is_verified_and_systemctl_skipped(installed):
    _, _, result = installed
    if Path("/run/systemd/system").is_dir():
        assert "skipping systemctl" in result.stdout  # a temporary root is not in systemd's search path
    else:
        assert "skipping systemctl: systemd is not PID 1" in result.stdout
    assert "+ systemctl" not in result.stdout
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd): the units were not verified")
    assert "+ systemd-analyze verify" in result.stdout  # the install fails if the unit does not verify


def verify(unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (Debian package systemd): units not verified")
def test_the_units_the_installed_code_writes_verify(installed, tmp_path):
    root, _, _ = installed
    # proximity-dns, as the installed Proximity writes it on a host with systemd, and the API unit.
    render = ("import sys\nfrom proximity.network import render\nfrom proximity.settings import load_settings\n"
              "for path, text in render.dns_unit_files(load_settings(systemd_dir=sys.argv[1]), True).items():\n"
              "    open(path, 'w').write(text)\n")
    subprocess.run([str(root / "opt/proximity/bin/python"), "-c", render, str(tmp_path)], check=True, timeout=60)
    checked = verify(tmp_path / "proximity-dns.service")
    assert checked.returncode == 0, f"proximity-dns.service: {checked.stdout}{checked.stderr}"
    # The API unit names /usr/local/bin/proximity: checked as a copy that names the staged command.
    copy = tmp_path / "proximity-api.service"
    copy.write_text((root / "etc/systemd/system/proximity-api.service").read_text()
                    .replace("/usr/local/bin/proximity", str(root / "usr/local/bin/proximity")))
    checked = verify(copy)
    assert checked.returncode == 0, f"proximity-api.service: {checked.stdout}{checked.stderr}"
    # The check has teeth: a unit whose program is missing fails it.
    broken = tmp_path / "broken.service"
    broken.write_text("[Service]\nExecStart=/nonexistent/proximity serve\n[Install]\nWantedBy=multi-user.target\n")
    assert verify(broken).returncode != 0


def test_bad_options_are_refused_with_the_fix(tmp_path):
    for args, message in ((["--prefix", "opt/proximity"], "--prefix must be an absolute path"),
                          (["--api-port", "80000"], "--api-port must be a port number"),
                          (["--frobnicate"], "unknown option '--frobnicate'")):
        result = install("--root", str(tmp_path), "--dry-run", *args, check=False)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_uninstall_takes_the_network_down_first_and_leaves_nothing_behind(installed, sandbox):
    root, before, _ = installed
    subprocess.run(staged(root, "up", "--sandbox", sandbox.name), capture_output=True, text=True, timeout=180,
                   check=True)
    status = json.loads(subprocess.run(staged(root, "status", "--sandbox", sandbox.name, "--json"),
                                       capture_output=True, text=True, timeout=60).stdout)  # exit 1 when degraded
    # A backup of the interfaces file and some state, as a host's own `up` leaves them.
    backup = root / "var/lib/proximity/backups/interfaces.20260101T000000"
    backup.parent.mkdir(parents=True)
    backup.write_text("auto lo\n")
    (root / "var/lib/proximity/reservations.json").write_text("[]\n")
    assert (status["bridge_up"], status["nat_configured"], status["dhcp_service_running"]) == (True, True, True)

    installed_tree = tree(root)
    dry = install("--uninstall", "--root", str(root), "--dry-run", sandbox=sandbox.name)
    assert tree(root) == installed_tree and "iface prox-net" in sandbox.interfaces_file.read_text()
    assert f"would remove: {root}/opt/proximity" in dry.stdout

    result = install("--uninstall", "--root", str(root), sandbox=sandbox.name)
    assert "proximity down" in result.stdout
    assert "iface prox-net" not in sandbox.interfaces_file.read_text()
    status = json.loads(proximity("status", "--sandbox", sandbox.name, "--json", check=False).stdout)
    assert not status["bridge_up"] and not status["dhcp_service_running"]
    for removed in ("opt/proximity", "usr/local/bin/proximity", "etc/systemd/system/proximity-api.service",
                    "var/lib/proximity/reservations.json"):
        assert f"removed: {root}/{removed}" in result.stdout
    # Everything goes but the backups of the interfaces file: the admin's way back.
    assert backup.read_text() == "auto lo\n" and "kept" in result.stdout
    assert tree(root) == {**before, **{key: value for key, value in tree(root).items()
                                       if key.startswith("var/lib/proximity")}}
    assert sorted(key for key in tree(root) if key.startswith("var/lib/proximity")) == [
        "var/lib/proximity", "var/lib/proximity/backups", "var/lib/proximity/backups/interfaces.20260101T000000"]


def test_uninstall_refuses_to_remove_a_directory_that_is_not_proximitys(tmp_path):
    root = skeleton(tmp_path)
    (root / "etc/keep.conf").write_text("the admin's\n")
    before = tree(root)
    result = install("--uninstall", "--root", str(root), "--etc-dir", "/etc", check=False)
    assert result.returncode == 2 and "refusing to remove" in result.stderr
    assert tree(root) == before
