"""The service under load from clients that never finish: a real `proximity serve --sandbox` on
127.0.0.1, and real slow, huge and idle clients on sockets from this process (loopback only).

The service runs with the descriptor limit systemd gives a unit by default (1024), so that a few
hundred clients could take every descriptor if nothing bounded them.
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import select
import socket
import subprocess
import threading
import time

import pytest

from proximity import sandbox as sandboxes
from proximity.host import wait_for
from proximity.settings import load_settings
from tests.integration.tools import PROXIMITY, proximity

NOFILE = 1024  # systemd's default soft limit for a unit


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kib(pid: int, field: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Service:
    def __init__(self, sandbox):
        self.sandbox, self.port = sandbox, free_port()
        self.log = open(sandbox.root / "load-serve.log", "w")

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))

        proximity("token", "create", "--sandbox", sandbox.name)  # as the install does; `token show` only reads it
        self.proc = subprocess.Popen([*PROXIMITY, "serve", "--sandbox", sandbox.name, "--host", "127.0.0.1",
                                      "--port", str(self.port)], stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=limit)
        self.token = proximity("token", "show", "--sandbox", sandbox.name).stdout.strip()
        assert wait_for(lambda: self.healthz() is not None or self.proc.poll() is not None, timeout=60)
        assert self.proc.poll() is None, (sandbox.root / "load-serve.log").read_text()

    def connect(self, timeout: float = 10) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def healthz(self) -> float | None:
        """Seconds /healthz took, None when it failed."""
        started = time.perf_counter()
        try:
            with self.connect(timeout=30) as conn:
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                ok = conn.recv(100).startswith(b"HTTP/1.1 200")
        except OSError:
            return None
        return time.perf_counter() - started if ok else None

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        with self.connect(timeout=30) as conn:
            conn.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {self.token}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                         .encode() + body)
            answer = b""
            while data := conn.recv(65536):
                answer += data
        head, _, rest = answer.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), rest

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def service(sandbox):
    proximity("up", "--sandbox", sandbox.name)
    served = Service(sandbox)
    try:
        yield served
    finally:
        served.stop()
        proximity("down", "--purge", "--sandbox", sandbox.name, check=False)


def closed_by_peer(conn: socket.socket) -> bool:
    try:
        conn.setblocking(False)
        return conn.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset
    finally:
        conn.setblocking(True)


def answer_of(conn: socket.socket) -> bytes:
    conn.settimeout(10)
    answer = b""
    try:
        while data := conn.recv(65536):
            answer += data
    except OSError:
        pass
    return answer


def test_a_client_that_never_finishes_its_headers_is_disconnected(service):
    clients = [service.connect() for _ in range(10)]
    started = time.monotonic()
    for conn in clients:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    try:
        # A slowloris: one more header line every half second, never the blank line that ends the head.
        while time.monotonic() - started < 40 and not all(closed_by_peer(conn) for conn in clients):
            for conn in clients:
                try:
                    conn.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    pass
            select.select([], [], [], 0.5)
        waited = time.monotonic() - started
        assert all(closed_by_peer(conn) for conn in clients), "slow clients still connected after 40 s"
        assert waited < 20, f"slow clients were disconnected only after {waited:.1f} s"
    finally:
        for conn in clients:
            conn.close()
    assert service.healthz() is not None


@pytest.mark.parametrize("head", [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 64 * 1024 + b"\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n",
], ids=["64-KiB-header", "150-headers"])
def test_a_head_over_the_caps_is_refused_with_431(service, head):
    with service.connect() as conn:
        try:
            conn.sendall(head)
        except OSError:
            pass  # closed while sending: refused too
        answer = answer_of(conn)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert service.healthz() is not None


def test_forty_clients_sending_8_mb_headers_do_not_grow_memory(service):
    pid = service.proc.pid
    before = kib(pid, "VmHWM")
    chunk = b"a" * 64 * 1024

    def flood() -> None:
        try:
            with service.connect() as conn:
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
                for _ in range(8 * 16):  # 8 MiB, never finished
                    conn.sendall(chunk)
                answer_of(conn)
        except OSError:
            pass  # the service closed the connection: what it should do

    threads = [threading.Thread(target=flood) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    grown = kib(pid, "VmHWM") - before
    assert grown < 30 * 1024, f"the service's peak memory grew by {grown} KiB under 40 huge heads"
    assert service.healthz() is not None


def test_with_idle_clients_holding_every_connection_a_deleted_bridge_is_still_healed(service):
    sb, pid = service.sandbox, service.proc.pid
    clients = []
    try:
        for _ in range(NOFILE + 100):  # more than the service's descriptor limit
            conn = service.connect()
            clients.append(conn)
            try:
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # half a request, and then nothing
            except OSError:
                pass  # closed at once: over the service's connection cap
        held = wait_for(lambda: fds(pid) if fds(pid) < NOFILE - 200 else None, timeout=5)
        assert held, f"the service holds {fds(pid)} descriptors of its {NOFILE} with idle clients connected"
        sandboxes.ns_run(sb.name, ["ip", "link", "delete", "prox-net"])

        def healthy() -> bool:
            out = proximity("status", "--sandbox", sb.name, "--json", check=False).stdout
            return bool(out) and json.loads(out)["health_status"] == "healthy"

        assert wait_for(healthy, timeout=60), (sb.root / "load-serve.log").read_text()[-3000:]
        assert "Too many open files" not in (sb.root / "load-serve.log").read_text()
    finally:
        for conn in clients:
            conn.close()
    assert wait_for(lambda: service.healthz() is not None, timeout=30)


def test_healthz_stays_fast_with_200_job_streams_open(service):
    sb = service.sandbox
    settings = load_settings(**sb.settings_overrides())
    streams: list[socket.socket] = []
    with open(settings.lock_file, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the job waits for the host lock: it stays running
        try:
            status, body = service.request("POST", "/api/v1/system/network/initialize", b"{}")
            assert status == 202, body
            job = json.loads(body)["job"]["id"]
            ask = (f"GET /api/v1/jobs/{job}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {service.token}"
                   "\r\n\r\n").encode()
            for _ in range(200):
                conn = service.connect(timeout=30)
                conn.sendall(ask)
                streams.append(conn)
            for conn in streams:  # every stream is open and has its first events
                assert conn.recv(4096).startswith(b"HTTP/1.1 200")
            took = [service.healthz() for _ in range(20)]
            assert None not in took and max(took) < 1.0, f"/healthz took {max(t or 99 for t in took):.2f} s"
            status, body = service.request("GET", f"/api/v1/jobs/{job}")
            assert status == 200 and json.loads(body)["data"]["status"] == "running"
            # The cap: 256 streams at once; one more is told to poll instead.
            for _ in range(56):
                conn = service.connect(timeout=30)
                conn.sendall(ask)
                streams.append(conn)
                assert conn.recv(4096).startswith(b"HTTP/1.1 200")
            with service.connect(timeout=30) as extra:
                extra.sendall(ask)
                refused = extra.recv(4096)
                while b"poll" not in refused and (data := extra.recv(4096)):  # the body may come apart
                    refused += data
            assert refused.startswith(b"HTTP/1.1 503") and b"poll" in refused, refused[:300]
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    try:
        # The job ends once it has the lock: every stream gets its last event and is closed.
        first = streams[0]
        first.settimeout(90)
        seen = b""
        while b"event: done" not in seen and (data := first.recv(65536)):
            seen += data
        assert b"event: done" in seen
    finally:
        for conn in streams:
            conn.close()
    # The streams are counted out as they end: a new one is served again.
    assert wait_for(lambda: service.request("GET", f"/api/v1/jobs/{job}/events")[0] == 200, timeout=30)
