"""kill -9 of `up` and `down` with three zones (prox-net, web, db), at points taken from the commands
they run; and a ruleset that fails `nft -c` changes nothing.

The kill points are not random sleeps: an `ip` first in PATH (every command Proximity runs is
`ip netns exec ...` or `ip -n ...`) counts the commands of the `proximity` process that runs it,
and at command N kills that process with SIGKILL, then either skips the command ("before") or
runs it as an orphan ("during", as a command Proximity started in a session of its own outlives
it). A first, unkilled `up` and `down` list the commands; the points are their changing ones
(nft -c, nft -f, ifreload, dnsmasq, the probe's namespace, nft delete) and the one after each.

After each kill, the same command again converges: `up` leaves every zone healthy with a plan of
nothing, one stanza and one dnsmasq per zone; `down --purge --force` leaves the original
interfaces file, no zone file, no pz-* link, no dnsmasq, no table. While both run, a poller lists
the table: every listing is the table before, the table after, or none, never a mix.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from proximity import sandbox as sandboxes
from tests.integration.test_kill import settled, temp_files
from tests.integration.tools import nft_table, proximity

ZONES = {"prox-net": "prox-net", "web": "pz-web", "db": "pz-db"}  # zone: bridge

KILLER = r"""#!/bin/sh
# Proximity's commands, counted; at the one numbered in $KILL_DIR/at, kill -9 the proximity process.
[ -n "$KILL_SEEN" ] && exec REAL_IP "$@"
case "$(tr '\0' ' ' < /proc/$PPID/cmdline 2>/dev/null)" in
  *" -m proximity "*)
    exec 9>>"$KILL_DIR/lock"; flock 9
    n=$(($(cat "$KILL_DIR/count" 2>/dev/null || echo 0) + 1)); echo "$n" > "$KILL_DIR/count"
    printf '%s\n' "$*" >> "$KILL_DIR/log"
    if [ "$n" = "$(cat "$KILL_DIR/at" 2>/dev/null)" ]; then
      printf '%s\n' "$*" > "$KILL_DIR/killed"; kill -9 "$PPID"
      [ "$(cat "$KILL_DIR/mode")" = before ] && exit 137
    fi
    exec 9>&-; export KILL_SEEN=1;;
esac
exec REAL_IP "$@"
"""
CHANGING = re.compile(r"nft -c|nft -f|nft delete|ifreload|dnsmasq --conf-file|netns add pxprobe")
MAX_POINTS = 8  # per command: enough to cross every kind of step, and the test stays near two minutes


class Killer:
    """The `ip` wrapper, its control directory, and `proximity VERB` run through it."""

    def __init__(self, root: Path):
        self.dir, self.bin = root / "ctl", root / "bin"
        self.dir.mkdir()
        self.bin.mkdir()
        (self.bin / "ip").write_text(KILLER.replace("REAL_IP", shutil.which("ip")))
        (self.bin / "ip").chmod(0o755)

    def run(self, sb, *args: str, at: int | None = None, mode: str = "before") -> tuple[list[str], str | None]:
        """``proximity ARGS``, killed at command ``at`` (None: not killed); (its commands, the one killed at)."""
        for name in ("count", "log", "killed"):
            (self.dir / name).unlink(missing_ok=True)
        (self.dir / "at").write_text(str(at or 0))
        (self.dir / "mode").write_text(mode)
        env = {**os.environ, "KILL_DIR": str(self.dir), "PATH": f"{self.bin}:{os.environ['PATH']}"}
        proc = subprocess.run([sys.executable, "-m", "proximity", *args, "--sandbox", sb.name], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120)
        log = (self.dir / "log").read_text().splitlines() if (self.dir / "log").exists() else []
        killed = (self.dir / "killed").read_text().strip() if (self.dir / "killed").exists() else None
        if at is None:
            assert proc.returncode == 0, proc.stderr
        else:
            assert (proc.returncode == -signal.SIGKILL) == (killed is not None), (proc.returncode, proc.stderr)
        return log, killed


def points(log: list[str]) -> list[tuple[int, str]]:
    """(command number, mode): each changing command, in turn skipped and run as an orphan, and the
    command after it; at most MAX_POINTS, spread evenly over the run."""
    found: list[tuple[int, str]] = []
    for i, argv in enumerate(log, start=1):
        if CHANGING.search(argv):
            found += [(i, "during" if len(found) % 2 else "before"), (i + 1, "before")]
    found = sorted(set(found))
    if len(found) > MAX_POINTS:
        step = (len(found) - 1) / (MAX_POINTS - 1)
        found = [found[round(k * step)] for k in range(MAX_POINTS)]
    return found


class TablePoller:
    """Lists the table every few milliseconds while a run goes on; every listing must be one of ``allowed``."""

    def __init__(self, sb):
        self.sb, self.seen, self._stop = sb, [], threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.seen.append(nft_table(self.sb.name))
            self._stop.wait(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def check(self, *allowed: str | None) -> None:
        """``nft list`` is several netlink dumps, not one snapshot: racing a create or a delete, it can
        print a table with nothing in it (2 of 270 listings while a loop deleted and loaded a table), a
        table the kernel never had. A half table the kernel has stays until the next transaction, so a
        listing counts only when the next one is the same."""
        mixed = [a for a, b in zip(self.seen, self.seen[1:]) if a == b and a not in allowed]
        assert not mixed, f"a table that is neither the old one nor the new one:\n{mixed[0]}"


def zone_dnsmasqs(sb) -> dict[str, int]:
    confs = {"prox-net": sb.dnsmasq_conf, **{z: sb.dnsmasq_conf.parent / "zones" / f"{z}.conf" for z in ("web", "db")}}
    argvs = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argvs.append(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
        except OSError:
            continue
    return {zone: sum(f"--conf-file={conf}".encode() in argv for argv in argvs) for zone, conf in confs.items()}


def zone_files(sb) -> list[Path]:
    return sorted((sb.interfaces_file.parent / "interfaces.d").glob("proximity-*"))


def links(sb) -> set[str]:
    return {link["ifname"] for link in json.loads(sandboxes.ns_run(sb.name, ["ip", "-j", "link"]).stdout)}


def tables(sb) -> int:
    return sandboxes.ns_run(sb.name, ["nft", "list", "tables"]).stdout.count("table inet proximity")


def assert_converged(sb, what: str) -> None:
    rows = json.loads(proximity("zone", "list", "--json", "--sandbox", sb.name).stdout)
    assert {r["name"]: r["health"] for r in rows} == dict.fromkeys(ZONES, "healthy"), (what, rows)
    assert json.loads(proximity("up", "--json", "--sandbox", sb.name).stdout)["actions"] == [], what
    assert sb.interfaces_file.read_text().count("iface prox-net inet static") == 1, what
    for path in zone_files(sb):
        bridge = ZONES[path.name.removeprefix("proximity-")]
        assert path.read_text().count(f"iface {bridge} inet static") == 1, (what, path)
    assert len(zone_files(sb)) == 2 and set(ZONES.values()) <= links(sb), what
    assert zone_dnsmasqs(sb) == dict.fromkeys(ZONES, 1), (what, zone_dnsmasqs(sb))
    assert tables(sb) == 1 and temp_files(sb) == [], what


def assert_removed(sb, original: bytes, what: str) -> None:
    assert sb.interfaces_file.read_bytes() == original, what
    assert zone_files(sb) == [], what
    assert not {name for name in links(sb) if name.startswith("pz-") or name == "prox-net"}, (what, links(sb))
    assert zone_dnsmasqs(sb) == dict.fromkeys(ZONES, 0), (what, zone_dnsmasqs(sb))
    assert nft_table(sb.name) is None and tables(sb) == 0, what
    assert temp_files(sb) == [], what


@pytest.fixture(scope="module")
def three(sandbox, tmp_path_factory):
    """The sandbox with web (10.20.0.0/24, IPv6 auto) and db (a /24 Proximity picks, IPv4 only) declared
    and built, then taken down: the host as it was, with the zones still in zones.toml."""
    sb = sandbox
    original = sb.interfaces_file.read_bytes()
    proximity("up", "--sandbox", sb.name)
    proximity("zone", "create", "web", "--subnet", "10.20.0.0/24", "--sandbox", sb.name)
    proximity("zone", "create", "db", "--ipv6", "off", "--sandbox", sb.name)
    proximity("down", "--purge", "--force", "--sandbox", sb.name)
    settled(sb)
    try:
        yield sb, original, Killer(tmp_path_factory.mktemp("killer"))
    finally:
        proximity("down", "--purge", "--force", "--sandbox", sb.name, check=False)


def test_kill_9_at_points_of_up_and_down_with_three_zones(three):
    sb, original, killer = three
    assert_removed(sb, original, "before the first up")
    up_log, _ = killer.run(sb, "up")  # the commands of an unkilled run, to pick the points from
    assert_converged(sb, "a first up")
    down_log, _ = killer.run(sb, "down", "--purge", "--force")
    settled(sb)
    assert_removed(sb, original, "a first down")
    ups, downs = points(up_log), points(down_log)
    assert len(ups) >= 6 and len(downs) >= 4, (up_log, down_log)
    hit = []
    for n in range(max(len(ups), len(downs))):
        at, mode = ups[n % len(ups)]
        with TablePoller(sb) as poll:
            _, killed = killer.run(sb, "up", at=at, mode=mode)
            proximity("up", "--sandbox", sb.name)  # races the killed run's orphans on purpose
        settled(sb)
        what = f"up killed {mode} command {at} ({killed})"
        poll.check(None, nft_table(sb.name))  # none before this round; the whole new table after it
        assert_converged(sb, what)
        hit.append(killed)

        at, mode = downs[n % len(downs)]
        converged = nft_table(sb.name)
        with TablePoller(sb) as poll:
            _, killed = killer.run(sb, "down", "--purge", "--force", at=at, mode=mode)
            proximity("down", "--purge", "--force", "--sandbox", sb.name)
        settled(sb)
        poll.check(converged, None)
        assert_removed(sb, original, f"down killed {mode} command {at} ({killed})")
        hit.append(killed)
    assert sum(k is not None for k in hit) >= len(hit) - 2, hit  # the points were reached (a run may differ a little)


NFT_REFUSES = r"""#!/bin/sh
# nft as on a kernel that lacks what the ruleset uses: the check fails, everything else is the real nft.
for arg in "$@"; do [ "$arg" = -c ] && { echo "Error: Could not process rule: Operation not supported" >&2; exit 1; }; done
exec REAL_NFT "$@"
"""


def snapshot(sb) -> dict:
    """What a refused change must leave as it was: Proximity's files, the zones' links and processes, the table."""
    etc, state = sb.dnsmasq_conf.parent, sb.state_dir
    volatile = ("probe.json", "proximity.lock")  # the last probe, and the lock's holder
    files = {p: p.read_bytes() for root in (etc, state, sb.interfaces_file.parent) for p in sorted(root.rglob("*"))
             if p.is_file() and "backups" not in p.parts and p.suffix not in (".log", ".leases") and p.name not in volatile}
    return {"files": files, "links": sorted(links(sb)), "dns": zone_dnsmasqs(sb), "table": nft_table(sb.name)}


def test_a_ruleset_that_fails_nft_check_changes_nothing_with_three_zones(three, tmp_path):
    sb, original, _ = three
    proximity("up", "--sandbox", sb.name)
    (tmp_path / "nft").write_text(NFT_REFUSES.replace("REAL_NFT", shutil.which("nft")))
    (tmp_path / "nft").chmod(0o755)
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "PROXIMITY_LIBNFTABLES": "off"}  # the binary's check
    try:
        assert_converged(sb, "three zones up")
        before = snapshot(sb)
        for args in (("zone", "create", "cache", "--ipv6", "off"), ("zone", "peer", "web", "db"),
                     ("zone", "delete", "db", "--force"), ("zone", "set", "web", "--host-services")):
            result = proximity(*args, "--sandbox", sb.name, check=False, env=env)
            out = result.stdout + result.stderr
            assert result.returncode == 1 and "Traceback" not in out, (args, out)
            assert "nft refused the ruleset" in out and "not changed" in out, (args, out)
            now = snapshot(sb)
            assert now["files"].keys() == before["files"].keys(), (args, set(now["files"]) ^ set(before["files"]))
            changed = [p for p in before["files"] if now["files"][p] != before["files"][p]]
            assert changed == [], (args, changed)
            assert now == before, args
        assert_converged(sb, "after the refused changes")
    finally:
        proximity("zone", "delete", "cache", "--force", "--sandbox", sb.name, check=False)
