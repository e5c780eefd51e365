"""Ten zones (issue 16): a no-op `up`, an `up` from scratch, and DNS q/s, each against its baseline.

- ``zones converge``: a no-op ``proximity up`` with 10 zones (prox-net and z1..z9, made with
  ``proximity zone create zN --ipv6 off``; the dual-stack variant sets prox-net ``--ipv6 auto`` and makes
  the nine with ``--ipv6 auto``) against a no-op ``ifreload -a`` on the same sandbox, alternating, as
  ``run.converge_rows`` does for one zone. Zero actions and no dnsmasq restarted (every zone's pid kept).
- ``zones up``: the first ``proximity up`` (whole process) on a fresh sandbox whose zones.toml declares
  prox-net and nine zones, per zone; the first ``up`` of a fresh one-zone sandbox is the reference.
- ``zones DNS``: ``bench/dnsload.py``'s load (dnsperf, 20 reserved names) against prox-net's dnsmasq on a
  sandbox with 10 zones (every zone's dnsmasq running) against the same on a one-zone sandbox; both
  sandboxes exist at once and the rounds alternate.

Run alone: ``.venv/bin/python bench/run.py --only "zones converge,zones up,zones DNS"``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import Row, median, percentile
from dnsload import CLIENT_ADDR, NAMES, dnsperf
from scale import GATEWAY, LightClients, destroy_sandbox, fresh_dnsmasq, reservations_at, write_reservations

from proximity import sandbox as sandboxes
from proximity.host import Host
from proximity.host.ifupdown import is_locked
from proximity.settings import load_settings
from proximity.zones_file import render_zones_file

PROXIMITY = [sys.executable, "-m", "proximity"]
ZONES = 10  # prox-net and z1..z9


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cli(*argv: str) -> subprocess.CompletedProcess:
    result = subprocess.run([*PROXIMITY, *argv], capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"proximity {' '.join(argv)} failed: {result.stderr[-2000:] or result.stdout[-2000:]}")
    return result


def timed(*argv: str) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, timeout=300)
    return time.perf_counter() - start


def reload_timed(name: str) -> float:
    """A no-op ``ifreload -a`` in the sandbox: the run that got ifupdown2's machine-wide lock (another
    session's reload makes it exit 89 at once; those tries are not counted: in the baseline's favour)."""
    for _ in range(600):
        start = time.perf_counter()
        result = subprocess.run(["ip", "netns", "exec", name, "ifreload", "-a"], capture_output=True, text=True,
                                timeout=300, check=False)
        seconds = time.perf_counter() - start
        if result.returncode == 0:
            return seconds
        if not is_locked(result.returncode, result.stderr):
            raise RuntimeError(f"ifreload -a failed in {name}: {result.stderr[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"ifreload -a in {name}: ifupdown2's lock stayed held by others")


def fresh(name: str) -> sandboxes.Sandbox:
    sandboxes.destroy(name)
    return sandboxes.create(name)


def settings_of(sb: sandboxes.Sandbox):
    return load_settings(**sb.settings_overrides())


def make_zones(name: str, ipv6: str) -> None:
    """prox-net plus z1..z9, as an admin makes them (each `zone create` brings its zone up)."""
    cli("up", "--sandbox", name)
    if ipv6 != "off":
        cli("zone", "set", "prox-net", "--ipv6", ipv6, "--sandbox", name)
    for i in range(1, ZONES):
        cli("zone", "create", f"z{i}", "--ipv6", ipv6, "--sandbox", name)


def dns_pids(sb: sandboxes.Sandbox) -> dict[str, str]:
    """Every dnsmasq pid file of the sandbox: one per zone."""
    return {p.name: p.read_text().strip() for p in sorted(sb.run_dir.glob("proximity-dns*.pid"))}


def converge_variant(ipv6: str, runs: int) -> Row:
    name = f"bzc{os.getpid() % 1000}"
    sb = fresh(name)
    try:
        make_zones(name, ipv6)
        zones = json.loads(cli("zone", "list", "--json", "--sandbox", name).stdout)
        count = len(zones) if isinstance(zones, list) else len(zones.get("zones", zones))
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(__file__).parents[1] / "src")], check=True)
        cli("up", "--sandbox", name)  # warm the page cache
        pids = dns_pids(sb)
        up, reload, changes, loads = [], [], 0, []
        for _ in range(runs):
            loads.append(load())
            start = time.perf_counter()
            changes += len(json.loads(cli("up", "--sandbox", name, "--json").stdout)["actions"])
            up.append(time.perf_counter() - start)
            reload.append(reload_timed(name))
        restarted = [k for k, v in dns_pids(sb).items() if pids.get(k) != v]
    finally:
        destroy_sandbox(name)
    met = median(up) <= median(reload) and changes == 0 and not restarted and count == ZONES
    variant = "IPv4 only (`--ipv6 off`)" if ipv6 == "off" else "dual-stack (prox-net and every zone `--ipv6 auto`)"
    return Row(f"no-op `proximity up` with {count} zones, {variant}, median", median(up), median(reload), "s",
               "not slower than a no-op `ifreload -a`; zero writes and restarts", met,
               notes=f"{changes} changes, {len(pids)} dnsmasq, restarted: {restarted or 'none'}; p95 "
                     f"{percentile(up, 95):.3f} s vs {percentile(reload, 95):.3f} s; {runs} runs; load {loads[0]}",
               samples={"proximity": up, "baseline": reload})


def zones_toml(ipv6: str) -> str:
    tables = {f"z{i}": {"subnet": f"10.10.{i}.0/24", "ipv6": ipv6} for i in range(1, ZONES)}
    return render_zones_file(tables, [], None if ipv6 == "off" else ipv6)


def first_up(name: str, zones: str | None) -> tuple[float, int]:
    """Seconds of the first `up` (whole process) on a fresh sandbox with ``zones`` as its zones.toml."""
    sb = fresh(name)
    try:
        if zones is not None:
            path = settings_of(sb).zones_file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(zones)
        seconds = timed(*PROXIMITY, "up", "--sandbox", name)
        up = json.loads(cli("zone", "list", "--json", "--sandbox", name).stdout)
        count = len(up) if isinstance(up, list) else len(up.get("zones", up))
    finally:
        destroy_sandbox(name)
    return seconds, count


def up_rows(runs: int) -> list[Row]:
    name = f"bzu{os.getpid() % 1000}"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(__file__).parents[1] / "src")], check=True)
    samples: dict[str, list[float]] = {"one": [], "off": [], "auto": []}
    counts: dict[str, set[int]] = {"one": set(), "off": set(), "auto": set()}
    loads = []
    for _ in range(runs):  # alternate, so that a noisy moment hits each alike
        loads.append(load())
        for key, zones in (("one", None), ("off", zones_toml("off")), ("auto", zones_toml("auto"))):
            seconds, count = first_up(name, zones)
            samples[key].append(seconds)
            counts[key].add(count)
    one = median(samples["one"])
    rows = []
    for key, variant in (("off", "IPv4 only"), ("auto", "dual-stack (IPv6 auto everywhere)")):
        total, count = median(samples[key]), max(counts[key])
        per_zone = total / count
        rows.append(Row(f"first `proximity up` of {count} zones from scratch, {variant}: s per zone", per_zone, one,
                        "s", "< 1 s per zone", per_zone < 1 and counts[key] == {ZONES},
                        notes=f"whole process {total:.2f} s (max {max(samples[key]):.2f}); baseline: the first up "
                              f"of one zone; median of {runs}; load {', '.join(loads)}",
                        samples={"proximity": samples[key], "baseline": samples["one"]}))
    return rows


class DnsTarget:
    """A sandbox with ``zones`` zones whose prox-net dnsmasq serves 20 reserved names to one client."""

    def __init__(self, name: str, zones: int):
        self.name, self.sb = name, fresh(name)
        if zones > 1:
            make_zones(name, "off")
        else:
            cli("up", "--sandbox", name)
        self.settings, self.host = settings_of(self.sb), Host(name)
        self.reservations = reservations_at(self.settings, NAMES, prefix="app")
        write_reservations(self.settings, self.host, self.reservations)
        fresh_dnsmasq(self.settings, self.host)  # the zone's own conf, as `up` wrote it
        self.client = LightClients(self.sb, 1, tag="q")
        self.client.create()
        self.client.set_static(self.client.hostnames[0], CLIENT_ADDR)
        self.query_file = self.sb.run_dir / "dnsperf-queries.txt"
        self.query_file.write_text("".join(f"{r.hostname}.{self.settings.domain} A\n" for r in self.reservations))
        self.dnsmasq = len(dns_pids(self.sb))

    def measure(self, seconds: float) -> dict[str, float]:
        ns = self.client.ns(self.client.hostnames[0])
        first = self.reservations[0]
        found = Host(ns).resolve(f"{first.hostname}.{self.settings.domain}", GATEWAY)
        if found != [first.ip]:
            raise RuntimeError(f"{first.hostname} does not resolve in {self.name} before the run: {found}")
        result = dnsperf(ns, self.query_file, seconds)
        if result["noerror"] < 0.99 * (result["sent"] - result["lost"]):
            raise RuntimeError(f"dnsperf got answers other than NOERROR in {self.name}: {result}")
        return result

    def close(self) -> None:
        self.client.destroy()
        destroy_sandbox(self.name)


def dns_rows(quick: bool) -> list[Row]:
    seconds, rounds = (2, 1) if quick else (5, 5)  # 5 rounds: round-to-round noise here is +-20%
    targets: list[DnsTarget] = []
    samples: dict[str, list[float]] = {"ten": [], "one": []}
    loads = []
    try:
        targets.append(DnsTarget(f"bzd{os.getpid() % 1000}", ZONES))
        targets.append(DnsTarget(f"bze{os.getpid() % 1000}", 1))
        for _ in range(rounds):
            loads.append(load())
            for key, target in zip(("ten", "one"), targets):
                samples[key].append(target.measure(seconds)["qps"])
        dnsmasq = targets[0].dnsmasq
    finally:
        for target in targets:
            target.close()
    ten, one = median(samples["ten"]), median(samples["one"])
    return [Row(f"DNS q/s with {ZONES} zones ({dnsmasq} dnsmasq running), prox-net's names", ten, one, "q/s",
                ">= 90% of one zone", ten >= 0.9 * one, lower_is_better=False,
                notes=f"{100 * ten / one:.0f}% of one zone; dnsperf {seconds} s x {rounds} alternating, 4 sockets, "
                      f"200 outstanding, {NAMES} reserved names; load {', '.join(loads)}",
                samples={"proximity": samples["ten"], "baseline": samples["one"]})]


def converge_rows(quick: bool) -> list[Row]:
    runs = 3 if quick else 7
    return [converge_variant("off", runs), converge_variant("auto", runs)]
