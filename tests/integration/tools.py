"""Tools the integration tests share: run proximity, listen, connect, resolve inside namespaces."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import pytest

PROXIMITY = [sys.executable, "-m", "proximity"]

def proximity(*args: str, check: bool = True, timeout: float = 120, env: dict | None = None):
    """Run the real `proximity` command, as a user would."""
    result = subprocess.run(
        [*PROXIMITY, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"proximity {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


# "::" listens on both families (an IPv4 peer is printed as its IPv4 address).
LISTENER = r"""
import socket, sys
address = sys.argv[1]
family = socket.AF_INET6 if ":" in address else socket.AF_INET
srv = socket.create_server((address, int(sys.argv[2])), family=family, dualstack_ipv6=address == "::")
print("ready", flush=True)
while True:
    conn, peer = srv.accept()
    print(peer[0].removeprefix("::ffff:"), flush=True)
    conn.sendall(b"hello from " + sys.argv[1].encode() + b"\n"); conn.close()
"""

CONNECT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
print(s.recv(100).decode().strip())
"""


class Listener:
    """A TCP server inside a namespace that reports each peer address; stopped by pid."""

    def __init__(self, ns: str, address: str, port: int):
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", LISTENER, address, str(port)],
            stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout.readline().strip() == "ready"

    def next_peer(self) -> str:
        return self.proc.stdout.readline().strip()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=5)
        self.proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def connect(ns: str, address: str, port: int, timeout: float = 3) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", CONNECT, address, str(port), str(timeout)],
        capture_output=True, text=True, timeout=timeout + 10,
    )


def resolve(ns: str, name: str, server: str, timeout: float = 2.0, rdtype: str = "A") -> list[str]:
    """A real DNS query for an A (or AAAA) record, sent from inside namespace ``ns``; Timeout if nobody answers."""
    import dns.exception

    from proximity.host import Host

    found = Host(ns).resolve(name, server, timeout=timeout, attempts=3, rdtype=rdtype)
    if found is None:
        raise dns.exception.Timeout(f"no answer from {server} for {name}")
    return found


def nft_table(ns: str) -> str | None:
    """Proximity's ``table inet proximity`` as nft lists it in namespace ``ns`` (None: there is none)."""
    result = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "table", "inet", "proximity"],
                            capture_output=True, text=True, timeout=30)
    return result.stdout if result.returncode == 0 else None


def delete_nft_rule(ns: str, chain: str, needle: str = "") -> None:
    """Delete by hand (by its handle) the first rule of Proximity's ``chain`` whose JSON contains ``needle``."""
    import json

    listing = subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "list", "chain", "inet", "proximity", chain],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    rules = [item["rule"] for item in json.loads(listing)["nftables"] if "rule" in item]
    handle = next(rule["handle"] for rule in rules if needle in json.dumps(rule))
    subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "rule", "inet", "proximity", chain, "handle",
                    str(handle)], check=True, timeout=30)


def wait_or_fail(check, timeout: float, what: str, max_delay: float = 0.25):
    """Poll ``check`` until it returns something truthy (each wait longer, up to ``max_delay``); fail
    the test with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = min(0.02, max_delay)
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what} (last: {result!r})")
        time.sleep(delay)
        delay = min(delay * 1.5, max_delay)


@contextlib.contextmanager
def small_disk_sandbox(name: str, keep_dir):
    """A sandbox whose state, run and /etc/proximity directories are 4 MiB tmpfs mounts (so a test can
    fill them); ``keep_dir()`` gives a fresh directory to carry their files over. Taken down after."""
    from proximity import sandbox as sandboxes

    sandboxes.destroy(name)
    box = sandboxes.create(name)
    mounted = []
    try:
        for directory in (box.state_dir, box.run_dir, box.dnsmasq_conf.parent):
            directory.mkdir(parents=True, exist_ok=True)
            keep = keep_dir()
            subprocess.run(["cp", "-a", f"{directory}/.", str(keep)], check=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "proximity-test", str(directory)],
                           check=True)
            mounted.append(directory)
            subprocess.run(["cp", "-a", f"{keep}/.", str(directory)], check=True)
        yield box
    finally:
        proximity("down", "--purge", "--force", "--sandbox", name, check=False)
        for directory in reversed(mounted):
            subprocess.run(["umount", "-l", str(directory)], check=False)
        sandboxes.destroy(name)

