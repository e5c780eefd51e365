"""The dashboard in a real browser: Debian's Chromium (headless) driven by Playwright.

The service runs in-process on 127.0.0.1 against a sandbox host with the network up; the page
is used as a person would: sign in with the token, read the health, create a container from the
form and follow its job, see its row (address and DNS name) and its lease, stop, start and
destroy it with the row's buttons. A screenshot goes to test-output/dashboard.png.

Needs `apt-get install chromium` and `pip install playwright` (no browser download: Playwright
drives /usr/bin/chromium). Chromium runs with its background networking off and a fresh profile,
and the page loads nothing but the service on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest

from proximity.api.app import Context, create_app
from proximity.host import wait_for
from proximity.settings import load_settings
from tests.integration.tools import proximity

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
HOSTNAME = "web-01"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="integration tests need root (network namespaces)"),
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                       reason=f"{CHROMIUM} is missing: `apt-get install chromium` (scripts/bootstrap.sh does)"),
]
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is missing: `pip install playwright` (scripts/bootstrap.sh does)")
expect = sync_api.expect


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def service(sandbox):
    """The API and dashboard on 127.0.0.1, in this process, for a sandbox with the network up."""
    import uvicorn

    proximity("up", "--sandbox", sandbox.name)
    context = Context(load_settings(**sandbox.settings_overrides()))
    token = context.tokens.ensure()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(context), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="dashboard-uvicorn", daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: server.started or not thread.is_alive(), timeout=30) and server.started, \
            "the service did not start"
        yield f"http://127.0.0.1:{port}", token, context
    finally:
        try:
            for container in context.containers.list():  # whatever a failed test left behind
                context.containers.destroy(str(container.vmid))
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            assert not thread.is_alive(), "the service did not stop"


@pytest.fixture
def page():
    profile = tempfile.mkdtemp(prefix="proximity-chromium-")
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 900}, service_workers="block",
            )
            try:
                tab = browser.pages[0] if browser.pages else browser.new_page()
                tab.set_default_timeout(15_000)
                yield tab
            finally:
                browser.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_dashboard_creates_and_manages_a_container(service, page):
    try:
        use_the_dashboard(service, page)
    except BaseException:
        with contextlib.suppress(Exception):  # a picture of what went wrong, never masking the failure
            OUTPUT.mkdir(exist_ok=True)
            page.screenshot(path=str(OUTPUT / "dashboard-failed.png"), full_page=True)
        raise


def use_the_dashboard(service, page) -> None:
    base_url, token, context = service
    outside = []  # every request the page makes must stay on the service
    page.on("request", lambda request: request.url.startswith((base_url, "data:")) or outside.append(request.url))
    page.goto(base_url + "/")

    # Sign in: a wrong token is refused and asked again; the right one opens the dashboard.
    expect(page.locator("#token-input")).to_be_visible()
    page.fill("#token-input", "not-the-token")
    page.click("#token-save")
    expect(page.locator("#token-error")).to_contain_text("refused")
    expect(page.locator("#app")).to_be_hidden()
    page.fill("#token-input", token)
    page.click("#token-save")
    expect(page.locator("#health")).to_have_text("healthy", timeout=30_000)
    for check in ("bridge", "nat", "dhcp"):
        expect(page.locator(f'#checks [data-check="{check}"]')).to_have_attribute("data-ok", "true")
    expect(page.locator("#pool-range")).to_have_text("10.10.0.100 – 10.10.0.250")
    expect(page.locator("#pool-size")).to_have_text("151")

    # A hostname that is not an RFC 1123 label: the error names the field, nothing is created.
    page.fill("#create-hostname", "bad-")
    page.click("#create-submit")
    expect(page.locator("#create-hostname-error")).to_contain_text("Hostname")
    expect(page.locator("#create-hostname")).to_have_attribute("aria-invalid", "true")

    # Create from the form and follow the job live (the fetch-stream reader, not the polling fallback).
    page.fill("#create-hostname", HOSTNAME)
    page.click("#create-submit")
    expect(page.locator("#create-hostname-error")).to_be_hidden()
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=120_000)
    expect(page.locator("#job-card")).to_have_attribute("data-transport", "stream")
    expect(page.locator("#job-progress")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#job-steps li").first).to_contain_text(f"reserving an address for {HOSTNAME}")
    expect(page.locator("#job-steps")).to_contain_text("created CT")

    row = page.locator(f'#containers tr[data-hostname="{HOSTNAME}"]')
    expect(row).to_be_visible(timeout=10_000)
    expect(row.locator('[data-col="dns_name"]')).to_have_text(f"{HOSTNAME}.prox.local")
    expect(row.locator('[data-col="ip"]')).to_have_text(re.compile(r"^10\.10\.0\.\d+$"))
    ip = ipaddress.ip_address(row.locator('[data-col="ip"]').inner_text())
    assert ipaddress.ip_address("10.10.0.100") <= ip <= ipaddress.ip_address("10.10.0.250")
    expect(row).to_have_attribute("data-state", "running", timeout=30_000)

    # The container boots and takes its reserved address: the lease appears, the pool bar counts it.
    lease = page.locator(f'#leases tr[data-hostname="{HOSTNAME}"]')
    expect(lease).to_be_visible(timeout=30_000)
    expect(lease.locator('[data-col="ip"]')).to_have_text(str(ip))
    expect(page.locator("#pool-used")).not_to_have_text("0")

    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "dashboard.png"), full_page=True)

    # Asking for the same name again is refused next to the hostname field.
    page.fill("#create-hostname", HOSTNAME)
    page.click("#create-submit")
    expect(page.locator("#create-hostname-error")).to_contain_text("already")
    page.fill("#create-hostname", "")

    # Stop and start with the row's buttons.
    row.get_by_role("button", name=f"Stop {HOSTNAME}").click()
    expect(row).to_have_attribute("data-state", "stopped", timeout=60_000)
    row.get_by_role("button", name=f"Start {HOSTNAME}").click()
    expect(row).to_have_attribute("data-state", "running", timeout=60_000)

    # Re-run converge: on a converged host it succeeds with nothing to do.
    page.click("#converge")
    expect(page.locator("#job-what")).to_have_text("Converge network prox-net")
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=60_000)
    expect(page.locator("#health")).to_have_text("healthy")

    # Destroy asks first; dismissing keeps the container, accepting removes it.
    page.once("dialog", lambda dialog: dialog.dismiss())
    row.get_by_role("button", name=f"Destroy {HOSTNAME}").click()
    expect(row.get_by_role("button", name=f"Destroy {HOSTNAME}")).to_be_enabled()
    assert [c.hostname for c in context.containers.list()] == [HOSTNAME]
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=f"Destroy {HOSTNAME}").click()
    expect(row).to_have_count(0, timeout=60_000)
    expect(page.locator("#containers tbody td.empty")).to_be_visible()
    assert context.containers.list() == []
    assert outside == [], f"the page requested something other than the service: {outside}"
