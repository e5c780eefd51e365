"""The Debian packages, installed into throwaway Debian 12 and 13 roots.

Each root is made once by mmdebstrap from Debian's packages, with the package's dependencies, and
cached in /var/cache/proximity-test; every test runs on a copy-on-write overlay of it, in new
mount, network and PID namespaces, chrooted, with a policy-rc.d that starts nothing. So nothing
here touches this machine: no file outside the overlay, no link or rule outside the namespace.
`make test-package` builds the packages first (dist/), then runs this.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PROXIMITY_TEST_CACHE", "/var/cache/proximity-test"))
RELEASES = {"bookworm": "deb12", "trixie": "deb13"}
UNIT_DIR = {"bookworm": "lib/systemd/system", "trixie": "usr/lib/systemd/system"}
DISTS = os.environ.get("DIST", "bookworm trixie").split()
MARKER = re.search(r'^marker="(.*)"$', (REPO / "scripts/install.sh").read_text(), re.M).group(1)


def deb_for(dist: str) -> Path:
    found = sorted((REPO / "dist").glob(f"proximity_*~{RELEASES[dist]}_*.deb"))
    assert found, f"no dist/proximity_*~{RELEASES[dist]}_*.deb: run `make deb DIST={dist}` first"
    return found[-1]


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True).stdout.strip()


def cached_root(dist: str, packages: list[str]) -> Path:
    """A minimal Debian root with these packages, made once per release and package list."""
    key = hashlib.sha256(" ".join([dist, "apt", *sorted(packages)]).encode()).hexdigest()[:12]
    root = CACHE / f"{dist}-{key}"
    if not (root / "usr/bin/python3").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = CACHE / f".{root.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run(["mmdebstrap", "--quiet", "--variant=apt", f"--include={','.join(packages)}", dist, str(partial)],
                       check=True, timeout=900)
        partial.rename(root)
    return root


class Root:
    """An overlay of a cached root; `run` executes a shell script chrooted into it, in new namespaces."""

    def __init__(self, dist: str, lower: Path, tmp: Path, deb: Path):
        self.dist, self.lower, self.deb = dist, lower, deb
        self.upper, self.work, self.merged, self.share = (tmp / n for n in ("upper", "work", "merged", "share"))
        for path in (self.upper, self.work, self.merged, self.share):
            path.mkdir()
        shutil.copy(deb, self.share / "proximity.deb")
        policy = self.upper / "usr/sbin/policy-rc.d"  # the Debian way to start no service while installing
        policy.parent.mkdir(parents=True)
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        # No fsync per file: the root is thrown away (as mmdebstrap itself installs).
        unsafe = self.upper / "etc/dpkg/dpkg.cfg.d/unsafe-io"
        unsafe.parent.mkdir(parents=True)
        unsafe.write_text("force-unsafe-io\n")

    def exists(self, path: str) -> bool:
        return self.run(f"test -e {path} || test -L {path}", check=False).returncode == 0

    def read(self, path: str) -> str:
        return self.run(f"cat {path}").stdout

    def stat(self, path: str, fmt: str) -> str:
        return self.run(f"stat -c {fmt} {path}").stdout.strip()

    def run(self, script: str, check: bool = True) -> subprocess.CompletedProcess:
        m = self.merged
        outer = (f"set -e; mount -t overlay overlay -o lowerdir={self.lower},upperdir={self.upper},workdir={self.work} {m}; "
                 f"mount -t proc proc {m}/proc; mount -t sysfs sysfs {m}/sys; mount --rbind /dev {m}/dev; "
                 f"mount --bind {self.share} {m}/mnt; "
                 'exec chroot "$0" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 '
                 'DEBIAN_FRONTEND=noninteractive /bin/bash -ec "$1"')
        result = subprocess.run(["unshare", "--mount", "--propagation", "private", "--net", "--pid", "--fork",
                                 "bash", "-c", outer, str(m), script], capture_output=True, text=True, timeout=600)
        if check and result.returncode != 0:
            raise AssertionError(f"in the root ({result.returncode}):\n{script}\n--- stdout\n{result.stdout}\n"
                                 f"--- stderr\n{result.stderr}")
        return result


@pytest.fixture(params=DISTS)
def root(request, tmp_path) -> Iterator[Root]:
    dist = request.param
    deb = deb_for(dist)
    packages = [re.split(r"[\s(]", dep.strip())[0] for dep in field(deb, "Depends").split(",")]
    yield Root(dist, cached_root(dist, sorted(set(packages))), tmp_path, deb)
    shutil.rmtree(tmp_path / "upper", ignore_errors=True)  # ~60 MB each: the package unpacked


def test_lintian_finds_no_error(root):
    result = subprocess.run(["lintian", "--fail-on", "error", "--no-tag-display-limit", str(root.deb)],
                            capture_output=True, text=True, timeout=600)
    print(result.stdout, result.stderr)
    assert result.returncode == 0 and not re.search(r"^E: ", result.stdout, re.M), result.stdout + result.stderr


def test_install_runs_and_plans_up_without_changing_the_host(root):
    started = time.monotonic()
    installed = root.run("dpkg -i /mnt/proximity.deb")
    print(f"dpkg -i: {time.monotonic() - started:.1f} s")
    assert "nothing on the network changed" in installed.stdout
    # Python and the command: the bundled environment for this release's /usr/bin/python3.
    version = field(root.deb, "Version").split("~")[0]
    help_text = root.run("proximity --help").stdout
    assert "Usage" in help_text
    if "--version" in help_text:  # `proximity --version` comes with the CLI work; enforced once it is there
        assert version in root.run("proximity --version").stdout
    root.run("python3 -c 'import sys; assert sys.prefix == \"/usr\"'; "
             "/usr/lib/proximity/bin/python3 -I -c 'import sys, pydantic_core, uvloop, cryptography.hazmat.bindings._rust; "
             "assert sys.prefix == \"/usr/lib/proximity\", sys.prefix'")
    # The token is made (0600), the unit is enabled but nothing was started (no systemd here, and policy-rc.d).
    assert root.stat("/etc/proximity/api-token", "%a:%s") .split(":")[0] == "600"
    assert len(root.read("/etc/proximity/api-token").strip()) >= 32
    assert root.stat("/etc/systemd/system/multi-user.target.wants/proximity-api.service", "%F") == "symbolic link"
    unit = root.read(f"/{UNIT_DIR[root.dist]}/proximity-api.service")
    assert "ExecStart=/usr/bin/proximity serve --host 127.0.0.1 --port 8080" in unit
    # up --dry-run on a host like a Proxmox node: /etc/pve, an uplink with a default route (in this
    # namespace only) that the interfaces file declares. It plans the bridge and changes nothing.
    uplink = ("mkdir -p /etc/pve; ip link add uplink0 type veth peer name uplink1; ip link set uplink1 up; "
              "ip addr add 192.0.2.10/24 dev uplink0; ip link set uplink0 up; ip route add default via 192.0.2.1; ")
    before = root.read("/etc/network/interfaces")
    # The root's own file does not declare the uplink: ifreload would take it down, so up refuses by name.
    refused = root.run(uplink + "proximity up --dry-run", check=False)
    assert refused.returncode != 0 and "declares no stanza for uplink0" in refused.stderr, refused.stderr
    assert root.read("/etc/network/interfaces") == before
    declared = "\nauto uplink0\niface uplink0 inet static\n\taddress 192.0.2.10/24\n\tgateway 192.0.2.1\n"
    planned = root.run(f"printf '{declared}' >> /etc/network/interfaces; cp /etc/network/interfaces /mnt/declared; "
                       + uplink + "proximity up --dry-run; cmp /etc/network/interfaces /mnt/declared; "
                       "! ip link show prox-net 2>/dev/null")
    assert "prox-net" in planned.stdout  # and cmp found the file as it was before the dry run


def test_upgrade_keeps_settings_state_and_token(root, tmp_path):
    root.run("dpkg -i /mnt/proximity.deb")
    token = root.read("/etc/proximity/api-token")
    root.run("printf 'lease_time = \"6h\"\\n' > /etc/proximity/proximity.toml; mkdir -p /var/lib/proximity; "
             "echo '{}' > /var/lib/proximity/reservations.json")
    # The same package as a newer version: dpkg runs the upgrade path of every maintainer script.
    newer = tmp_path / "newer"
    subprocess.run(["dpkg-deb", "-R", str(root.deb), str(newer)], check=True)
    control = newer / "DEBIAN/control"
    control.write_text(re.sub(r"^Version: (.*)$", r"Version: \1+upgrade", control.read_text(), flags=re.M))
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(newer), str(root.share / "newer.deb")],
                   check=True, capture_output=True)
    upgraded = root.run("dpkg -i /mnt/newer.deb; dpkg-query -W -f='${Version}' proximity")
    assert upgraded.stdout.endswith("+upgrade")
    assert root.read("/etc/proximity/api-token") == token
    assert root.read("/etc/proximity/proximity.toml") == 'lease_time = "6h"\n'
    assert root.read("/var/lib/proximity/reservations.json") == "{}\n"


def fake_install_sh(root: Root) -> None:
    """What scripts/install.sh leaves at its default paths (its marker, its record, its unit, enabled)."""
    root.run(f"""mkdir -p /opt/proximity/bin /usr/local/bin /etc/systemd/system/multi-user.target.wants
printf '%s\\n' {shlex.quote(MARKER)} prefix=/opt/proximity bin-dir=/usr/local/bin systemd-dir=/etc/systemd/system \
  etc-dir=/etc/proximity state-dir=/var/lib/proximity run-dir=/run/proximity > /opt/proximity/install.env
printf '#!/bin/sh\\n%s\\nexec /opt/proximity/bin/proximity "$@"\\n' {shlex.quote(MARKER)} > /usr/local/bin/proximity
chmod 755 /usr/local/bin/proximity
printf '# Managed by Proximity: x\\n[Service]\\nExecStart=/usr/local/bin/proximity serve\\n' \
  > /etc/systemd/system/proximity-api.service
ln -s /etc/systemd/system/proximity-api.service /etc/systemd/system/multi-user.target.wants/proximity-api.service
mkdir -p /etc/proximity; echo kept-token > /etc/proximity/api-token; chmod 600 /etc/proximity/api-token""")


def test_a_host_installed_with_install_sh_moves_to_the_package(root):
    # Something not Proximity's in /usr/local/bin: the install refuses, with the fix, and changes nothing.
    root.run("mkdir -p /usr/local/bin; printf '#!/bin/sh\\necho mine\\n' > /usr/local/bin/proximity")
    refused = root.run("dpkg -i /mnt/proximity.deb", check=False)
    assert refused.returncode != 0 and "remove or rename it" in refused.stderr, refused.stderr
    assert not root.exists("/usr/bin/proximity")
    root.run("rm /usr/local/bin/proximity")
    fake_install_sh(root)
    moved = root.run("dpkg -i /mnt/proximity.deb; command -v proximity; proximity --help >/dev/null")
    assert moved.stdout.strip().splitlines()[-1] == "/usr/bin/proximity"
    for gone in ("/opt/proximity", "/usr/local/bin/proximity", "/etc/systemd/system/proximity-api.service"):
        assert not root.exists(gone), f"{gone} is left behind"
    wants = root.run("readlink /etc/systemd/system/multi-user.target.wants/proximity-api.service").stdout.strip()
    assert wants.endswith("lib/systemd/system/proximity-api.service"), wants  # trixie's helper names /lib too
    assert root.read("/etc/proximity/api-token") == "kept-token\n", "the token stays"


def test_remove_and_purge_keep_what_a_live_stanza_needs(root):
    root.run("dpkg -i /mnt/proximity.deb")
    # The files `proximity up` leaves (written here as text: nothing is applied in the root).
    root.run("""printf '\\nauto prox-net\\niface prox-net inet static\\n\\taddress 10.10.0.1/24\\n# proximity:managed - x\\n' \
  >> /etc/network/interfaces
mkdir -p /var/lib/proximity/backups; echo conf > /etc/proximity/dnsmasq.conf
echo unit > /etc/systemd/system/proximity-dns.service
for f in dnsmasq.leases dhcp-hosts hosts backups/interfaces.1; do echo x > /var/lib/proximity/$f; done""")
    removed = root.run("dpkg -r proximity")
    assert "run 'proximity down' first" in removed.stderr
    purged = root.run("dpkg -P proximity")
    assert "kept /etc/proximity" in purged.stderr
    for kept in ("/etc/proximity/dnsmasq.conf", "/etc/systemd/system/proximity-dns.service",
                 "/var/lib/proximity/dnsmasq.leases", "/var/lib/proximity/dhcp-hosts", "/var/lib/proximity/hosts"):
        assert root.exists(kept), f"purge deleted {kept}, which the stanza needs at boot"
    assert not root.exists("/etc/proximity/api-token")
    assert not root.exists("/usr/bin/proximity")
    # Without the stanza, purge removes Proximity's files but the interfaces backups.
    root.run("dpkg -i /mnt/proximity.deb; sed -i '/prox-net/,$d' /etc/network/interfaces; "
             "rm /etc/systemd/system/proximity-dns.service; dpkg -P proximity")
    assert not root.exists("/etc/proximity")
    assert root.exists("/var/lib/proximity/backups/interfaces.1")
    assert not root.exists("/var/lib/proximity/dnsmasq.leases")
