"""Bad input refused at the door, on a sandbox host whose network is up: a clear message,
exit 2, and nothing changed. And a full state disk: a clear error, exit 1, every file intact.

For the full disk, the state directory of a sandbox host (whose network is up) is covered, in a private mount
namespace of the command alone (``unshare -m``), by a small tmpfs holding a copy of it, filled
up to the last block. Nothing is mounted where anything else can see it, and the mount goes
away with the command.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.integration.tools import PROXIMITY, proximity

FULL_DISK = r"""
set -e
state="$1"; shift; out="$1"; shift
cp -a "$state/." "$out/copy"
mount --make-rprivate /
mount -t tmpfs -o size=256k,mode=0755 proximity-full-disk "$state"
cp -a "$out/copy/." "$state/"
dd if=/dev/zero of="$state/.filler" bs=4k 2>/dev/null || true  # until ENOSPC
cd "$state"
find . -type f ! -name .filler -exec sha256sum {} + | sort -k2 > "$out/before"
set +e
"$@" > "$out/stdout" 2> "$out/stderr"
echo $? > "$out/rc"
find . -type f ! -name .filler -exec sha256sum {} + | sort -k2 > "$out/after"
"""


EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # sha256 of nothing


def assert_intact(out) -> None:
    """Every file as it was; nothing new but an empty lock file (no stray temporary file)."""
    before = dict(reversed(line.split("  ", 1)) for line in (out / "before").read_text().splitlines())
    after = dict(reversed(line.split("  ", 1)) for line in (out / "after").read_text().splitlines())
    assert before and {path: after.get(path) for path in before} == before
    assert all(path.endswith(".lock") and after[path] == EMPTY for path in after.keys() - before.keys()), after


def snapshot(sandbox) -> dict:
    """What a refused command must leave as it was: Proximity's files, dnsmasq, the containers."""
    files = [sandbox.interfaces_file, sandbox.dnsmasq_conf, *sorted(p for p in sandbox.state_dir.rglob("*")
                                                                     if p.is_file() and p.suffix != ".log")]
    return {
        "files": {str(p): p.read_bytes() for p in files if p.exists()},
        "dnsmasq": (sandbox.run_dir / "proximity-dns.pid").read_text(),
        "containers": proximity("ct", "list", "--json", "--sandbox", sandbox.name).stdout,
    }


@pytest.mark.parametrize(("variable", "value", "reason"), [
    ("PROXIMITY_LEASE_TIME", "12h\n", "not a lease time"),
    ("PROXIMITY_LEASE_TIME", "99999999999999999w", "longer than a year"),
    ("PROXIMITY_LEASE_TIME", "INFINITE", "'infinite' (spelled so)"),
    ("PROXIMITY_DOMAIN", "test", "single label"),
    ("PROXIMITY_DOMAIN", "localhost", "RFC 6761"),
    ("PROXIMITY_BRIDGE", "prox-net\n", "interface name"),
])
def test_bad_settings_change_nothing(network, variable, value, reason):
    sandbox = network
    before = snapshot(sandbox)
    for command in (["up"], ["up", "--dry-run"], ["down"], ["ct", "create", "web-01"]):
        result = proximity(*command, "--sandbox", sandbox.name, check=False, env={variable: value})
        assert result.returncode == 2, (command, result)
        assert reason in result.stderr and variable in result.stderr and repr(value) in result.stderr
        assert "Traceback" not in result.stderr
    assert snapshot(sandbox) == before


@pytest.mark.parametrize(("hostname", "reason"), [
    ("101", "all digits"), ("localhost", "reserved"), ("wpad", "reserved"), ("Gateway", "reserved"),
    ("app\n", "RFC 1123"), ("_gateway", "RFC 1123"), ("web.example.com", "no dots"),
])
def test_bad_container_hostnames_change_nothing(network, hostname, reason):
    sandbox = network
    before = snapshot(sandbox)
    for extra in ([], ["--dry-run"]):
        result = proximity("ct", "create", hostname, *extra, "--sandbox", sandbox.name, check=False)
        assert result.returncode == 2 and reason in result.stderr and "Traceback" not in result.stderr, result
    assert snapshot(sandbox) == before


def on_a_full_state_disk(sandbox, tmp_path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "copy").mkdir()
    subprocess.run(["unshare", "--mount", "sh", "-c", FULL_DISK, "full-disk", str(sandbox.state_dir), str(tmp_path),
                    *PROXIMITY, *args], check=True, timeout=120)
    return subprocess.CompletedProcess(args, int((tmp_path / "rc").read_text()), (tmp_path / "stdout").read_text(),
                                       (tmp_path / "stderr").read_text())


@pytest.mark.parametrize("command", [["ct", "create", "full-01"], ["ct", "create", "full-02", "--no-start"]])
def test_ct_create_on_a_full_state_disk_fails_clearly_and_damages_nothing(network, tmp_path, command):
    sandbox = network
    reservations = (sandbox.state_dir / "reservations.json").read_text() if (
        sandbox.state_dir / "reservations.json").exists() else None
    result = on_a_full_state_disk(sandbox, tmp_path, *command, "--sandbox", sandbox.name)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert "No space left on device" in result.stderr and "free some space" in result.stderr
    assert str(sandbox.state_dir) in result.stderr  # names the path
    assert_intact(tmp_path)
    # Nothing happened outside the full disk either: no container, no reservation.
    assert proximity("ct", "list", "--json", "--sandbox", sandbox.name).stdout.strip() == "[]"
    now = (sandbox.state_dir / "reservations.json").read_text() if (
        sandbox.state_dir / "reservations.json").exists() else None
    assert now == reservations


def test_token_rotate_on_a_full_disk_keeps_the_old_token(network, tmp_path):
    """The token lives next to dnsmasq.conf; here that directory is the full one."""
    sandbox = network
    proximity("token", "create", "--sandbox", sandbox.name)
    old = proximity("token", "show", "--sandbox", sandbox.name).stdout
    (tmp_path / "copy").mkdir()
    etc = sandbox.dnsmasq_conf.parent
    subprocess.run(["unshare", "--mount", "sh", "-c", FULL_DISK, "full-disk", str(etc), str(tmp_path),
                    *PROXIMITY, "token", "rotate", "--sandbox", sandbox.name], check=True, timeout=120)
    rc, stderr = int((tmp_path / "rc").read_text()), (tmp_path / "stderr").read_text()
    assert rc == 1 and "Traceback" not in stderr and "No space left on device" in stderr, stderr
    assert_intact(tmp_path)
    assert proximity("token", "show", "--sandbox", sandbox.name).stdout == old
