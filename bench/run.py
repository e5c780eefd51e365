"""`make bench`: every benchmark on a fresh sandbox, each against a baseline measured in the same run.

Writes bench/results.md (what, Proximity, baseline, ratio, target, met) and bench/results.json
(the same rows with their raw samples and the machine). `--quick` runs every row at small sizes;
`--only PART[,PART]` (e.g. `--only network-ready`) runs those parts, prints their rows and writes their
samples to bench/results-PART.json (results.md keeps the last whole run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.append(str(BENCH))  # last: never shadow an installed package

import api  # noqa: E402
import containers  # noqa: E402
import datapath  # noqa: E402
import dnsload  # noqa: E402
import peers  # noqa: E402
import ready6  # noqa: E402
import ruleset  # noqa: E402
import scale  # noqa: E402
import zones  # noqa: E402
from common import Row, machine, median, percentile  # noqa: E402

from proximity import sandbox as sandboxes  # noqa: E402

PROXIMITY = [sys.executable, "-m", "proximity"]


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def converge_rows(runs: int) -> list[Row]:
    # Installed packages carry bytecode (ifupdown2's does); a source checkout edited since the
    # last bootstrap may not, and would time compiling Python rather than running it.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src" / "proximity")], check=True)
    name = f"bv{os.getpid() % 10000}"
    sandboxes.destroy(name)
    sb = sandboxes.create(name)
    try:
        first = timed([*PROXIMITY, "up", "--sandbox", name])
        pid = sb.run_dir.joinpath("proximity-dns.pid").read_text().strip()
        timed([*PROXIMITY, "up", "--sandbox", name])  # warm the page cache
        up, reload, changes = [], [], 0
        for _ in range(runs):
            start = time.perf_counter()
            out = subprocess.run([*PROXIMITY, "up", "--sandbox", name, "--json"], check=True, capture_output=True)
            up.append(time.perf_counter() - start)
            changes += len(json.loads(out.stdout)["actions"])
            reload.append(timed(["ip", "netns", "exec", name, "ifreload", "-a"]))
        restarted = sb.run_dir.joinpath("proximity-dns.pid").read_text().strip() != pid
    finally:
        sandboxes.destroy(name)
    met = median(up) <= median(reload) and changes == 0 and not restarted
    return [
        Row("no-op `proximity up` (whole process), median", median(up), median(reload), "s",
            "not slower than a no-op `ifreload -a`; zero writes and restarts", met,
            notes=f"{changes} changes, dnsmasq restarted: {restarted}; p95 {percentile(up, 95):.3f} s vs "
                  f"{percentile(reload, 95):.3f} s", samples={"proximity": up, "baseline": reload}),
        Row("first `proximity up` on a fresh sandbox", first, None, "s", "", None, samples={"proximity": [first]}),
    ]


def ready_rows(count: int) -> list[Row]:
    measured = dict(containers.run(count))
    rows = []
    for what, probe in (("name resolves", "name"), ("lease", "lease")):
        ours, seed = measured[f"Proximity: start → {probe}"], measured[f"baseline (seed dnsmasq): start → {probe}"]
        p95, base = percentile(ours, 95), percentile(seed, 95)
        rows.append(Row(f"{count} containers: start → {what}, p95", p95, base, "s",
                        "p95 < 1 s and >= 3x faster than the seed's dnsmasq", p95 < 1 and base >= 3 * p95,
                        notes=f"median {median(ours):.3f} s vs {median(seed):.3f} s",
                        samples={"proximity": ours, "baseline": seed}))
    ours = measured[f"Proximity: start → {containers.READY}"]
    for peer in peers.PEERS:
        theirs = measured[f"{peer.label}: start → {containers.READY}"]
        p95, base = percentile(ours, 95), percentile(theirs, 95)
        target = f">= {peer.factor:g}x faster than {peer.label}" if peer.factor > 1 else f"not slower than {peer.label}"
        bound, named = (measured[f"{peer.label}: start → {what}"] for what in ("bound", "name"))
        rows.append(Row(f"{count} containers: start → lease and A record, p95, vs {peer.label}", p95, base, "s",
                        target, base >= peer.factor * p95,
                        notes=f"median {median(ours):.3f} s vs {median(theirs):.3f} s; theirs: lease held p95 "
                              f"{percentile(bound, 95):.3f} s, name p95 {percentile(named, 95):.3f} s",
                        samples={"proximity": ours, "baseline": theirs}))
    return rows


def api_rows() -> list[Row]:
    results = api.run()
    rows = []
    for mode in dict.fromkeys(r.mode for r in results):
        ours, naive = [r for r in results if r.mode == mode]
        p99, base = ours.pct(99), naive.pct(99)
        rows.append(Row(f"status API, {api.CLIENTS} clients, {mode}: p99", p99, base, "ms",
                        "p99 < 10 ms and >= 10x faster than fork-per-check", p99 < 10 and base >= 10 * p99,
                        notes=f"p50 {ours.pct(50):.2f} vs {naive.pct(50):.2f} ms; {ours.rps:.0f} vs {naive.rps:.0f} req/s",
                        samples={"proximity": ours.latencies_ms[:2000], "baseline": naive.latencies_ms[:2000]}))
    return rows


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.3g} {unit}" if abs(value) < 1000 else f"{value:,.0f} {unit}"


def table(rows: list[Row]) -> list[str]:
    lines = ["| what | Proximity | baseline | ratio | target | met |", "|---|---|---|---|---|---|"]
    for row in rows:
        met = {True: "yes", False: "**no**", None: "-"}[row.met]
        ratio = f"{row.ratio:.2f}x" if row.ratio else "-"
        note = f" ({row.notes})" if row.notes else ""
        lines.append(f"| {row.what}{note} | {fmt(row.proximity, row.unit)} | {fmt(row.baseline, row.unit)} | "
                     f"{ratio} | {row.target or '-'} | {met} |")
    return lines


def write_results(rows: list[Row], quick: bool, seconds: float) -> None:
    facts = machine()
    lines = [
        "# Benchmark results", "",
        f"Machine: {facts['cores']} cores, {facts['memory_gib']} GiB, kernel {facts['kernel']}, "
        f"Python {facts['python']}. Mode: {'quick' if quick else 'full'}, {seconds:.0f} s in all. "
        f"Written by `make bench{' BENCH_QUICK=1' if quick else ''}` on {time.strftime('%Y-%m-%d %H:%M %Z')}.", "",
        "Ratio: how many times better Proximity is than the baseline (higher is better).", "",
        *table(rows),
    ]
    (BENCH / "results.md").write_text("\n".join(lines) + "\n")
    (BENCH / "results.json").write_text(json.dumps(
        {"machine": facts, "quick": quick, "seconds": seconds,
         "rows": [{**row.as_dict(), "machine": facts} for row in rows]}, indent=1) + "\n")


def main() -> None:
    quick = "--quick" in sys.argv or os.environ.get("BENCH_QUICK") == "1"
    if quick:
        os.environ.setdefault("BENCH_API_SECONDS", "2")
        os.environ.setdefault("BENCH_API_RATES", "500")
        api.SECONDS, api.RATES = float(os.environ["BENCH_API_SECONDS"]), [500.0]
    start = time.perf_counter()
    parts = {
        "converge": lambda: converge_rows(3 if quick else 7),
        "network-ready": lambda: ready_rows(5 if quick else 20),
        "status API": api_rows,
        "scale": lambda: scale.run(quick),
        "DNS": lambda: dnsload.run(quick),
        "data path": lambda: datapath.run(quick),
        "firewall": lambda: ruleset.run(quick),
        "zones converge": lambda: zones.converge_rows(quick),
        "zones up": lambda: zones.up_rows(2 if quick else 3),
        "zones DNS": lambda: zones.dns_rows(quick),
        "network-ready IPv6": lambda: ready6.run(5 if quick else 20),
    }
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
    if only is not None:  # some parts, printed; the results files keep the last whole run
        chosen = only.split(",")
        unknown = [name for name in chosen if name not in parts]
        if unknown:
            sys.exit(f"--only {only!r}: the parts are {', '.join(map(repr, parts))}")
        rows = [row for name in chosen for row in parts[name]()]
        print("\n".join(table(rows)))
        (BENCH / f"results-{only.replace(' ', '-').replace(',', '+')}.json").write_text(json.dumps(
            {"machine": machine(), "quick": quick, "rows": [row.as_dict() for row in rows]}, indent=1) + "\n")
        return
    rows: list[Row] = []
    for label, part in parts.items():
        print(f"bench: {label} ...", flush=True)
        rows += part()
    write_results(rows, quick, time.perf_counter() - start)
    sys.stdout.write((BENCH / "results.md").read_text())


if __name__ == "__main__":
    main()
