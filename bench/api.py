"""Status endpoint under 50 concurrent clients: the snapshot-backed API against a naive per-request probe.

Both servers run the same way, in the same run, on the same sandbox host: uvicorn (one process
each, one worker) on 127.0.0.1, with FastAPI and the same bearer-token check.

(a) Proximity: ``proximity serve --sandbox NAME``, the real service. ``GET /api/v1/system/network/status``
    answers from the status snapshot (kept current by netlink/inotify/pidfd events in the background).
(b) baseline: the naive handler, which on every request runs ``ip -j addr show``, ``iptables-save``
    and ``pgrep`` (no systemctl on this machine) in the sandbox host, as a status endpoint written
    without a snapshot would.

The load: 50 clients, each on its own keep-alive connection to 127.0.0.1, bounded in time:

* ``saturated``: each client sends its next request as soon as the answer came (closed loop): the
  most requests/s the server gives; latency there is mostly queueing (50 requests in flight).
* ``paced``: the 50 clients together send a fixed rate (``BENCH_API_RATES``, 500/s and 1000/s by
  default, spread evenly); latency is measured from the moment a request was due, so a server that falls behind
  pays for the whole queue (no coordinated omission).

The load generator is a minimal asyncio HTTP/1.1 client in this process (httpx costs more CPU per
request than the server under test on a 2-core machine); one real request is checked with httpx.

Run alone: ``.venv/bin/python bench/api.py``; ``make bench`` prints it as one table.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

CLIENTS = int(os.environ.get("BENCH_API_CLIENTS", "50"))
SECONDS = float(os.environ.get("BENCH_API_SECONDS", "5"))
RATES = [float(r) for r in os.environ.get("BENCH_API_RATES", "500,1000").split(",")]  # paced: req/s in all
MAX_REQUESTS = 200_000  # per phase, whatever the duration
STATUS_PATH = "/api/v1/system/network/status"
TARGET_P99_MS = 10.0


@dataclass
class LoadResult:
    label: str
    mode: str
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    missed: int = 0  # paced: requests that fell due but were never sent, the server being still busy
    elapsed: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]

    @property
    def max(self) -> float:
        return max(self.latencies_ms, default=float("nan"))


# --------------------------------------------------------------------------- the naive baseline server


def baseline_app(sandbox: str):
    """The naive status endpoint: three processes per request, nothing kept between requests."""
    from types import SimpleNamespace

    from fastapi import Depends, FastAPI

    from proximity import sandbox as sandboxes
    from proximity.api.auth import TokenStore, require_token
    from proximity.settings import load_settings

    settings = load_settings(**sandboxes.load(sandbox).settings_overrides())
    app = FastAPI(title="naive status")
    app.state.context = SimpleNamespace(tokens=TokenStore(settings))
    in_ns = ["ip", "netns", "exec", sandbox]

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)

    @app.get(STATUS_PATH, dependencies=[Depends(require_token)])
    def status() -> dict:
        addrs = json.loads(run([*in_ns, "ip", "-j", "addr", "show"]).stdout or "[]")
        bridge = next((link for link in addrs if link.get("ifname") == settings.bridge), None)
        gateway = bool(bridge) and any(
            a.get("local") == str(settings.gateway.ip) and a.get("prefixlen") == settings.gateway.network.prefixlen
            for a in bridge.get("addr_info", []))
        rules = run([*in_ns, "nft", "list", "table", "inet", "proximity"]).stdout
        nat = " masquerade\n" in rules
        comment = f'"{settings.bridge}"'
        dnsmasq = run(["pgrep", "-F", str(settings.dns_pid_file), "-x", "dnsmasq"]).returncode == 0
        bridge_up = bool(bridge) and "UP" in bridge.get("flags", [])
        healthy = bridge_up and gateway and nat and dnsmasq
        return {"message": "Network infrastructure operational" if healthy else "Network unhealthy",
                "data": {"bridge_name": settings.bridge, "bridge_up": bridge_up, "gateway_assigned": gateway,
                         "nat_configured": nat, "rules_tagged": comment in rules, "dhcp_service_running": dnsmasq,
                         "health_status": "healthy" if healthy else "unhealthy"}}

    return app


def serve_baseline(sandbox: str, port: int) -> None:
    import uvicorn

    uvicorn.run(baseline_app(sandbox), host="127.0.0.1", port=port, log_level="warning")


# --------------------------------------------------------------------------- servers as processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A server process on 127.0.0.1, stopped by its pid."""

    def __init__(self, argv: list[str], port: int, log: Path):
        self.port = port
        self.log = log
        self._log = open(log, "w")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_ready(self, token: str, timeout: float = 60) -> dict:
        """Until the status endpoint answers 200 and says healthy; its last answer."""
        import httpx

        deadline = time.monotonic() + timeout
        last: object = None
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
                try:
                    response = client.get(STATUS_PATH)
                    last = response.text
                    if response.status_code == 200 and response.json()["data"]["health_status"] == "healthy":
                        return response.json()
                except httpx.TransportError as exc:
                    last = exc
                time.sleep(0.1)
        raise RuntimeError(f"server on port {self.port} not ready and healthy within {timeout:.0f} s: {last}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


# --------------------------------------------------------------------------- the load generator


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _load(port: int, token: str, clients: int, seconds: float, rate: float | None,
                result: LoadResult) -> None:
    request = (f"GET {STATUS_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Authorization: Bearer {token}\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(clients)]
    for reader, writer in connections:  # warm every connection (and the server's thread pool) once
        await _get(reader, writer, request)
    start = loop.time()
    deadline = start + seconds
    interval = clients / rate if rate else 0.0
    sent = 0

    async def client(index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        due = start + index * interval / clients
        while sent < MAX_REQUESTS:
            now = loop.time()
            if now >= deadline:
                if rate:  # requests that fell due while the server was still busy: never served
                    result.missed += max(0, int((deadline - due) // interval) + 1) if due < deadline else 0
                return
            if rate:
                if due > now:
                    await asyncio.sleep(due - now)
                began = due  # latency counts from when the request was due, queueing included
                due += interval
            else:
                began = now
            sent += 1
            try:
                status = await _get(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                result.errors += 1
                return
            if status != 200:
                result.errors += 1
            result.latencies_ms.append((loop.time() - began) * 1000)

    tasks = [asyncio.create_task(client(i, r, w)) for i, (r, w) in enumerate(connections)]
    _done, pending = await asyncio.wait(tasks, timeout=seconds + 30)  # the last answers, bounded
    for task in pending:
        task.cancel()
    result.errors += len(pending)
    result.elapsed = loop.time() - start
    for _reader, writer in connections:
        writer.close()


def load(label: str, port: int, token: str, rate: float | None) -> LoadResult:
    """``rate`` None: saturated (closed loop); else paced at ``rate`` requests/s in all."""
    result = LoadResult(label, "saturated" if rate is None else f"paced {rate:g}/s")
    asyncio.run(_load(port, token, CLIENTS, SECONDS, rate, result))
    return result


# --------------------------------------------------------------------------- the benchmark


def run() -> list[LoadResult]:
    from proximity import sandbox as sandboxes
    from proximity.api.auth import TokenStore
    from proximity.settings import load_settings

    name = f"ba{os.getpid() % 10000}"
    sandboxes.destroy(name)
    sb = sandboxes.create(name)
    servers: list[Server] = []
    results: list[LoadResult] = []
    try:
        subprocess.run([sys.executable, "-m", "proximity", "up", "--sandbox", name], check=True, capture_output=True)
        settings = load_settings(**sb.settings_overrides())
        token = TokenStore(settings).ensure()
        snapshot_port, naive_port = free_port(), free_port()
        servers.append(Server([sys.executable, "-m", "proximity", "serve", "--sandbox", name,
                               "--host", "127.0.0.1", "--port", str(snapshot_port)],
                              snapshot_port, sb.run_dir / "bench-api-snapshot.log"))
        servers.append(Server([sys.executable, __file__, "--baseline-server", name, str(naive_port)],
                              naive_port, sb.run_dir / "bench-api-naive.log"))
        for server in servers:
            server.wait_ready(token)
        for rate in (None, *RATES):
            results.append(load("(a) Proximity (snapshot)", snapshot_port, token, rate))
            results.append(load("(b) naive: 3 processes/request", naive_port, token, rate))
    finally:
        for server in servers:
            server.stop()
        sandboxes.destroy(name)
    return results


def table(results: list[LoadResult]):
    from rich.table import Table

    out = Table(title=f"Status endpoint, {CLIENTS} concurrent clients on keep-alive connections, {SECONDS:g} s "
                      "per row (saturated: each client re-sends at once; paced: a fixed rate in all, latency from "
                      f"when each request was due); target p99 < {TARGET_P99_MS:g} ms for (a)")
    for column in ("server", "load", "req/s", "p50 ms", "p99 ms", "max ms", "answered", "not sent", "errors"):
        out.add_column(column)
    for r in results:
        out.add_row(r.label, r.mode, f"{r.rps:.0f}", f"{r.pct(50):.2f}", f"{r.pct(99):.2f}", f"{r.max:.2f}",
                    str(len(r.latencies_ms)), str(r.missed) if r.mode != "saturated" else "-", str(r.errors))
    return out


def main() -> None:
    from rich.console import Console

    Console().print(table(run()))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--baseline-server":
        serve_baseline(sys.argv[2], int(sys.argv[3]))
    else:
        main()
