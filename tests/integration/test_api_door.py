"""The service at the door, as a LAN client meets it: HTTPS only, the token before the body,
and a cap on the body's size.

A real `proximity serve` runs inside the sandbox host's namespace on its LAN address
(198.51.100.2); every client here runs in the sandbox's LAN namespace, and what crosses the
LAN is captured on the LAN router's interface with a raw packet socket.
"""

from __future__ import annotations

import json
import os
import select
import socket
import ssl
import subprocess
import sys

import pytest

from proximity.api.tls import fingerprint
from proximity.host import inside_netns, wait_for
from proximity.sandbox import HOST_UPLINK_ADDR
from tests.integration.tools import PROXIMITY, proximity

HOST = HOST_UPLINK_ADDR.split("/")[0]
PORT = 8443
MB = 1024 * 1024

CAPTURE = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
s.bind((sys.argv[1], 0))
out = open(sys.argv[2], "wb")
print("ready", flush=True)
while True:
    out.write(s.recv(65535)); out.flush()
"""


def rss_kib(pid: int, field: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


@pytest.fixture(scope="module")
def served(sandbox):
    """`proximity serve` on the sandbox host's LAN address: HTTPS with a self-signed certificate."""
    pid_file = sandbox.run_dir / "door-test.pid"
    log = open(sandbox.root / "door-serve.log", "w")
    server = subprocess.Popen(
        ["ip", "netns", "exec", sandbox.name, *PROXIMITY, "serve", "--sandbox", sandbox.name, "--host", HOST,
         "--port", str(PORT), "--pid-file", str(pid_file)], stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: healthz(sandbox) or server.poll() is not None, timeout=60)
        assert server.poll() is None, (sandbox.root / "door-serve.log").read_text()
        token = proximity("token", "show", "--sandbox", sandbox.name).stdout.strip()
        yield server, token
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        proximity("down", "--purge", "--sandbox", sandbox.name, check=False)


def tls_client(sandbox) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(sandbox.dnsmasq_conf.parent / "api-cert.pem"))
    context.check_hostname = False
    return context


def healthz(sandbox) -> bool:
    try:
        with inside_netns(sandbox.lan_ns), socket.create_connection((HOST, PORT), timeout=1) as raw:
            with tls_client(sandbox).wrap_socket(raw) as conn:
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return conn.recv(100).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def early_answer(conn: ssl.SSLSocket) -> bytes:
    """What the service has answered so far, without waiting (TLS session tickets are no answer)."""
    if not select.select([conn], [], [], 0)[0]:
        return b""
    conn.setblocking(False)
    try:
        return conn.recv(4096)
    except ssl.SSLWantReadError:
        return b""
    finally:
        conn.settimeout(30)


def send_body(sandbox, headers: dict[str, str], total: int, chunked: bool) -> tuple[int, int]:
    """POST a body of ``total`` bytes over TLS from the LAN; stop sending once the service answers.

    Returns (status, bytes sent)."""
    head = "POST /api/v1/containers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {total}\r\n"
    chunk = b"x" * (256 * 1024)
    frame = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") if chunked else chunk
    sent, answer = 0, b""
    with inside_netns(sandbox.lan_ns):
        raw = socket.create_connection((HOST, PORT), timeout=30)
    with tls_client(sandbox).wrap_socket(raw) as conn:
        conn.sendall((head + "\r\n").encode())
        while sent < total and not (answer := early_answer(conn)):
            try:
                conn.sendall(frame)
            except OSError:
                break
            sent += len(chunk)
        while b"\r\n" not in answer and (data := conn.recv(4096)):
            answer += data
    return int(answer.split(b" ")[1]), sent


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_huge_body_gets_401_without_a_token_and_413_with_one_and_memory_stays_bounded(sandbox, served, chunked):
    server, token = served
    baseline = rss_kib(server.pid, "VmHWM")  # the peak so far: start-up and converge
    status, sent = send_body(sandbox, {}, 200 * MB, chunked)
    assert status == 401 and sent < 200 * MB
    status, sent = send_body(sandbox, {"Authorization": f"Bearer {token}"}, 200 * MB, chunked)
    assert status == 413 and sent < 200 * MB
    status, _ = send_body(sandbox, {"Authorization": "Bearer wrong"}, 2 * MB, chunked)
    assert status == 401
    grown = rss_kib(server.pid, "VmHWM") - baseline
    assert grown < 20 * 1024, f"the service's peak memory grew by {grown} KiB"
    assert healthz(sandbox)
    listed = json.loads(proximity("ct", "list", "--json", "--sandbox", sandbox.name).stdout)
    assert listed == []  # nothing was created


def test_a_small_body_still_reaches_the_api(sandbox, served):
    _server, token = served
    body = b'{"hostname": "localhost"}'
    with inside_netns(sandbox.lan_ns):
        raw = socket.create_connection((HOST, PORT), timeout=30)
    with tls_client(sandbox).wrap_socket(raw) as conn:
        conn.sendall(f"POST /api/v1/containers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                     .encode() + body)
        answer = b""
        while data := conn.recv(4096):
            answer += data
    assert answer.startswith(b"HTTP/1.1 422"), answer
    assert b"reserved" in answer and b"hostname" in answer


def test_token_show_prints_the_token_and_json_adds_the_fingerprint(sandbox, served):
    _server, token = served
    cert = sandbox.dnsmasq_conf.parent / "api-cert.pem"
    shown = json.loads(proximity("token", "show", "--json", "--sandbox", sandbox.name).stdout)
    assert shown == {"token": token, "certificate": str(cert), "sha256": fingerprint(cert)}
    with inside_netns(sandbox.lan_ns), socket.create_connection((HOST, PORT), timeout=5) as raw:
        unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
        with unverified.wrap_socket(raw) as conn:
            served_der = conn.getpeercert(binary_form=True)
    import hashlib

    assert ":".join(f"{b:02X}" for b in hashlib.sha256(served_der).digest()) == shown["sha256"]
    assert os.stat(sandbox.dnsmasq_conf.parent / "api-key.pem").st_mode & 0o777 == 0o600


def test_plain_http_is_not_served_on_the_lan(sandbox, served):
    with inside_netns(sandbox.lan_ns), socket.create_connection((HOST, PORT), timeout=5) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.settimeout(5)
        try:
            answer = conn.recv(100)
        except OSError:
            answer = b""
    assert not answer.startswith(b"HTTP/")  # a TLS alert or a closed connection, never an HTTP answer


def test_the_token_never_crosses_the_lan_in_clear_text(sandbox, served):
    _server, token = served
    capture_file = sandbox.root / "lan-capture.bin"
    capture = subprocess.Popen(["ip", "netns", "exec", sandbox.lan_ns, sys.executable, "-c", CAPTURE, "lan0",
                                str(capture_file)], stdout=subprocess.PIPE, text=True)
    try:
        assert capture.stdout.readline().strip() == "ready"
        url = f"https://{HOST}:{PORT}"
        # The CLI on the LAN: it finds the token and the certificate to pin in the sandbox's files.
        result = subprocess.run(["ip", "netns", "exec", sandbox.lan_ns, *PROXIMITY, "up", "--sandbox", sandbox.name,
                                 "--api", url], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "converged by the service" in result.stdout
        refused = subprocess.run(["ip", "netns", "exec", sandbox.lan_ns, *PROXIMITY, "up", "--sandbox", sandbox.name,
                                  "--api", f"http://{HOST}:{PORT}"], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and "clear text" in refused.stderr and "--insecure-http" in refused.stderr
        assert "Traceback" not in refused.stderr
        # A last datagram across the LAN: once the capture has it, it has everything before it.
        marker = f"end-of-capture-{os.getpid()}".encode()
        with inside_netns(sandbox.lan_ns), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(marker, (HOST, 9))
        assert wait_for(lambda: marker in capture_file.read_bytes(), timeout=10)
    finally:
        capture.kill()
        capture.wait(timeout=5)
    seen = capture_file.read_bytes()
    capture_file.unlink()
    assert len(seen) > 2000  # the CLI's requests and the service's answers did cross the LAN
    assert b"\x16\x03" in seen  # TLS handshake records
    assert token.encode() not in seen and b"Bearer" not in seen and b"/api/v1/" not in seen


def test_insecure_http_to_a_lan_address_warns_why(sandbox, served):
    """--insecure-http is allowed, with a warning; here the service speaks TLS, so the request fails cleanly."""
    result = subprocess.run(["ip", "netns", "exec", sandbox.lan_ns, *PROXIMITY, "up", "--sandbox", sandbox.name,
                             "--api", f"http://{HOST}:{PORT}", "--insecure-http"], capture_output=True, text=True,
                            timeout=60)
    assert "warning" in result.stderr and "clear text" in result.stderr
    assert result.returncode == 1 and "Traceback" not in result.stderr
