"""DNS queries per second for container names, from a container's namespace, with dnsperf.

Proximity's dnsmasq settings against the same settings plus ``log-queries`` (what the seed's
troubleshooting suggests turning on), restarted with that conf on the same sandbox host.
The names are reservations (``addn-hosts``): dnsmasq answers them authoritatively from memory.

Run alone: ``.venv/bin/python bench/dnsload.py [--quick]``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path



from common import Row, median
from scale import (
    GATEWAY,
    LightClients,
    destroy_sandbox,
    fresh_dnsmasq,
    proximity_up,
    reservations_at,
    sandbox_name,
    sandbox_settings,
    write_reservations,
)

from proximity import sandbox as sandboxes
from proximity.host import Host

NAMES = 20
CLIENT_ADDR = "10.10.0.50/24"  # outside the default DHCP range 10.10.0.100-250


def dnsperf(ns: str, query_file: Path, seconds: float) -> dict[str, float]:
    """One dnsperf run from namespace ``ns`` against the gateway; its summary numbers."""
    argv = ["nsenter", f"--net=/run/netns/{ns}", "dnsperf", "-s", GATEWAY, "-d", str(query_file),
            "-l", f"{seconds:g}", "-c", "4", "-T", "1", "-q", "200", "-t", "2"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"dnsperf failed: {result.stderr.strip() or result.stdout.strip()}")
    out = result.stdout

    def number(label: str) -> float:
        match = re.search(rf"{label}:\s+([\d.]+)", out)
        if not match:
            raise RuntimeError(f"no '{label}' in dnsperf's output:\n{out}")
        return float(match.group(1))

    answered = re.search(r"NOERROR (\d+)", out)
    return {"qps": number("Queries per second"), "sent": number("Queries sent"),
            "lost": number("Queries lost"), "latency_ms": number("Average Latency \\(s\\)") * 1000,
            "noerror": float(answered.group(1)) if answered else 0.0}


def run(quick: bool = False) -> list[Row]:
    if shutil.which("dnsperf") is None:
        raise RuntimeError("dnsperf is not installed: apt-get install dnsperf")
    seconds, rounds = (2, 1) if quick else (5, 3)
    name = sandbox_name("bd")
    sandboxes.destroy(name)
    sb = sandboxes.create(name)
    samples: dict[str, list[float]] = {"proximity": [], "log-queries": []}
    runs: dict[str, list[dict[str, float]]] = {"proximity": [], "log-queries": []}
    try:
        proximity_up(name)
        settings = sandbox_settings(sb)
        host = Host(name)
        reservations = reservations_at(settings, NAMES, prefix="app")
        write_reservations(settings, host, reservations)
        conf = settings.dnsmasq_conf.read_text()
        client = LightClients(sb, 1, tag="q")
        client.create()
        client.set_static(client.hostnames[0], CLIENT_ADDR)
        query_file = sb.run_dir / "dnsperf-queries.txt"
        query_file.write_text("".join(f"{r.hostname}.{settings.domain} A\n" for r in reservations))
        ns = client.ns(client.hostnames[0])
        for _ in range(rounds):  # alternate, so that a noisy moment hits both sides alike
            for label, text in (("proximity", conf), ("log-queries", conf + "log-queries\n")):
                fresh_dnsmasq(settings, host, text)
                found = Host(ns).resolve(f"{reservations[0].hostname}.{settings.domain}", GATEWAY)
                if found != [reservations[0].ip]:
                    raise RuntimeError(f"{reservations[0].hostname} does not resolve before the run: {found}")
                result = dnsperf(ns, query_file, seconds)
                if result["noerror"] < 0.99 * (result["sent"] - result["lost"]):
                    raise RuntimeError(f"dnsperf got answers other than NOERROR: {result}")
                runs[label].append(result)
                samples[label].append(result["qps"])
        fresh_dnsmasq(settings, host, conf)
        client.destroy()
    finally:
        destroy_sandbox(name)
    prox, base = median(samples["proximity"]), median(samples["log-queries"])
    last = runs["proximity"][-1]
    lost = sum(r["lost"] for r in runs["proximity"])
    return [Row("DNS q/s, container names, from a container", prox, base, "q/s", ">= 10,000 q/s", prox >= 10_000,
                lower_is_better=False,
                notes=f"dnsperf {seconds} s x {rounds}, 4 sockets, 200 outstanding, {NAMES} reserved names; baseline "
                      f"= same conf + log-queries; avg latency {last['latency_ms']:.2f} ms; {lost:.0f} lost",
                samples={"qps": samples["proximity"], "qps_log_queries": samples["log-queries"]})]


if __name__ == "__main__":
    from scale import print_rows

    started = time.perf_counter()
    print_rows(run(quick="--quick" in sys.argv))
    print(f"({time.perf_counter() - started:.1f} s)")
