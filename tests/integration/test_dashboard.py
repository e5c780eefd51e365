"""The dashboard in a real browser: Debian's Chromium (headless) driven by Playwright.

The service runs in-process on 127.0.0.1 against a sandbox host with the network up; the page
is used as a person would: sign in with the token, read the health, create a container from the
form and follow its job, see its row (address and DNS name) and its lease, stop, start and
destroy it with the row's buttons; its own page (lease, addresses, events); the doctor; migrate; the
hostname rule against the server's; the remembered token; phone width (390 px) with no horizontal
scroll; /docs offline. Screenshots go to /tmp/shots/ (desktop.png, phone.png) and test-output/.

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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from proximity import sandbox as sandboxes
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
SHOTS = Path("/tmp/shots")  # the closing note's screenshots
HOSTNAME = "web-01"
PHONE = {"width": 390, "height": 844}

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


def pictured(page, name: str, use) -> None:
    try:
        use()
    except BaseException:
        with contextlib.suppress(Exception):  # a picture of what went wrong, never masking the failure
            OUTPUT.mkdir(exist_ok=True)
            page.screenshot(path=str(OUTPUT / f"{name}-failed.png"), full_page=True)
        raise


def sign_in(page, base_url: str, token: str, remember: bool = False) -> None:
    page.goto(base_url + "/")
    page.fill("#token-input", token)
    if remember:
        page.check("#token-remember")
    page.click("#token-save")
    expect(page.locator("#app")).to_be_visible()


def no_horizontal_scroll(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide at {PHONE['width']} px"


def test_dashboard_creates_and_manages_a_container(service, page):
    pictured(page, "dashboard", lambda: use_the_dashboard(service, page))


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
    # One row per check id (the status's `checks`, or the same shape from its fields): all pass.
    expect(page.locator('#checks [data-check="bridge"]')).to_have_attribute("data-ok", "true")
    expect(page.locator('#checks li[data-ok="false"]')).to_have_count(0)
    assert page.locator("#checks li").count() >= 3
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
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "desktop.png"), full_page=True)

    # At phone width nothing is off-screen: no horizontal scroll, the row's buttons within reach.
    page.set_viewport_size(PHONE)
    expect(row).to_be_visible()
    no_horizontal_scroll(page)
    for name in ("Stop", "Destroy"):
        box = row.get_by_role("button", name=f"{name} {HOSTNAME}").bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (name, box)
    page.screenshot(path=str(SHOTS / "phone.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})

    # The container's own page: its addresses, its lease and its events (the create job).
    row.get_by_role("link", name=f"Open {HOSTNAME}").click()
    ct_page = page.locator("#ct-page")
    expect(ct_page).to_be_visible()
    expect(page.locator("#overview")).to_be_hidden()
    expect(page.locator("#ct-title")).to_have_text(HOSTNAME)
    expect(page.locator("#ct-ip")).to_have_text(str(ip))
    expect(page.locator("#ct-dns")).to_have_text(f"{HOSTNAME}.prox.local")
    expect(page.locator("#ct-lease")).to_contain_text(str(ip))
    expect(page.locator("#ct-events li[data-kind='create']")).to_contain_text(
        f"Create container {HOSTNAME} succeeded")
    expect(page.locator('#ct-page [data-ct-action="migrate"]')).to_be_hidden()  # already on prox-net
    page.screenshot(path=str(SHOTS / "container.png"), full_page=True)
    page.set_viewport_size(PHONE)
    no_horizontal_scroll(page)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.click("#ct-back")
    expect(page.locator("#overview")).to_be_visible()

    # Asking for the same name again is refused next to the hostname field.
    page.fill("#create-hostname", HOSTNAME)
    page.click("#create-submit")
    expect(page.locator("#create-hostname-error")).to_contain_text("already")
    assert page.locator("#create-hostname-error").inner_text()[0].isupper()  # a sentence
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


def test_the_token_is_remembered_only_when_asked_and_forgotten(service, page):
    base_url, token, _ = service
    sign_in(page, base_url, token)  # not remembered: a new tab asks again
    other = page.context.new_page()
    other.goto(base_url + "/")
    expect(other.locator("#token-input")).to_be_visible()
    other.close()

    page.click("#token-change")
    page.fill("#token-input", token)
    page.check("#token-remember")
    page.click("#token-save")
    expect(page.locator("#health")).not_to_have_text("loading…")
    other = page.context.new_page()
    other.goto(base_url + "/")
    expect(other.locator("#app")).to_be_visible()
    expect(other.locator("#health")).to_have_text("healthy", timeout=30_000)
    other.click("#token-forget")
    expect(other.locator("#token-input")).to_be_visible()
    assert other.evaluate("localStorage.getItem('proximity.token')") is None
    other.close()
    third = page.context.new_page()
    third.goto(base_url + "/")
    expect(third.locator("#token-input")).to_be_visible()
    third.close()


def test_the_sign_in_hint_names_the_sandbox(service, page):
    base_url, _, context = service
    page.goto(base_url + "/")
    expect(page.locator("#token-command")).to_have_text(f"proximity token show --sandbox {context.settings.netns}")


def test_hostname_validation_is_the_servers_in_the_servers_words(service, page):
    """The browser refuses what settings.check_hostname refuses, in the sentence the server's 422 has
    (no "Value error, "), and the hint never shows a refused name as resolving."""
    import httpx

    from proximity.api.info import sentence
    from proximity.errors import InputError
    from proximity.settings import check_hostname

    base_url, token, context = service
    sign_in(page, base_url, token)
    expect(page.locator("#fact-backend")).to_contain_text("lxc")  # the rule has been read
    before = context.containers.list()
    for name in ("Bad_Name", "bad-", "101", "wpad", "Localhost", "web.example.com"):
        with pytest.raises(InputError) as refused:
            check_hostname(name)
        words = sentence({"loc": ("body", "hostname"), "msg": f"Value error, {refused.value}"})
        server = httpx.post(f"{base_url}/api/v1/containers", json={"hostname": name},
                            headers={"Authorization": f"Bearer {token}"})
        assert server.status_code == 422 and server.json()["detail"][0]["msg"] == words, server.text
        assert "Value error" not in words and words[0] == "H" and words.endswith(".")

        page.fill("#create-hostname", name)
        expect(page.locator("#create-hostname-error")).to_have_text(words)
        expect(page.locator("#create-hostname")).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#create-hostname-hint")).to_have_attribute("data-state", "invalid")
        expect(page.locator("#create-hostname-hint")).not_to_contain_text("resolve")
        page.click("#create-submit")
        expect(page.locator("#create-hostname-error")).to_have_text(words)
    page.fill("#create-hostname", "good-01")
    expect(page.locator("#create-hostname-error")).to_be_hidden()
    expect(page.locator("#create-hostname-hint")).to_have_text("It will resolve as good-01.prox.local.")
    memory = httpx.post(f"{base_url}/api/v1/containers", json={"hostname": "good-01", "memory": 1},
                        headers={"Authorization": f"Bearer {token}"})
    assert memory.json()["detail"][0]["msg"] == "Memory: input should be greater than or equal to 16."
    assert context.containers.list() == before


def test_the_template_field_is_shown_where_the_backend_needs_one(service, page):
    base_url, token, _ = service
    sign_in(page, base_url, token)
    expect(page.locator("#fact-backend")).to_contain_text("lxc")
    expect(page.locator("#create-template-field")).to_be_hidden()  # lxc builds its rootfs itself

    # A Proxmox service says it needs one (and its default): the page asks for it, prefilled.
    info = httpx_json(base_url, token, "/api/v1/system/info")
    assert info["data"]["backend"] == "lxc" and info["data"]["needs_template"] is False
    proxmox = {**info["data"], "backend": "proxmox", "needs_template": True, "template": ""}
    page.route("**/api/v1/system/info", lambda route: route.fulfill(json={"data": proxmox}))
    posted = []
    page.on("request", lambda r: r.method == "POST" and "/containers" in r.url and posted.append(r.url))
    page.reload()
    expect(page.locator("#create-template-field")).to_be_visible()
    page.fill("#create-hostname", "pve-01")
    page.click("#create-submit")
    expect(page.locator("#create-template-error")).to_contain_text("Template: the proxmox backend")
    assert posted == []


def httpx_json(base_url: str, token: str, path: str) -> dict:
    import httpx

    response = httpx.get(base_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    response.raise_for_status()
    return response.json()


def test_the_doctor_view_shows_each_check_and_the_whole_fix(service, page):
    base_url, token, _ = service
    sign_in(page, base_url, token)
    page.click("#doctor-run")
    expect(page.locator("#doctor-card")).to_have_attribute("data-state", "passed", timeout=60_000)
    expect(page.locator('#doctor-list [data-check="bridge"]')).to_have_attribute("data-ok", "true")
    expect(page.locator("#doctor-summary")).to_contain_text("checks passed")

    # A failing check in the structured shape ({id, ok, severity, observed, fix}): observed and the
    # whole fix are shown, wrapped, never cut; what is wrong comes first.
    fix = "tail /var/lib/proximity/sandboxes/demo/proximity-dns.log; then proximity up --sandbox demo " * 3
    body = {"checks": [
        {"id": "bridge", "ok": True, "severity": "error", "observed": "prox-net is up with 10.10.0.1/24", "fix": ""},
        {"id": "dns_answering", "ok": False, "severity": "error", "observed": "no answer from 10.10.0.1:53 in 2 s",
         "fix": fix.strip()},
        {"id": "forward_policy", "ok": False, "severity": "warning", "observed": "FORWARD policy DROP", "fix": "none"},
    ]}
    page.route("**/api/v1/system/network/doctor", lambda route: route.fulfill(json=body))
    page.click("#doctor-run")
    expect(page.locator("#doctor-card")).to_have_attribute("data-state", "failed")
    first = page.locator("#doctor-list li").first
    expect(first).to_have_attribute("data-check", "dns_answering")
    expect(first.locator(".detail")).to_have_text("no answer from 10.10.0.1:53 in 2 s")
    expect(first.locator(".fix code")).to_have_text(fix.strip())
    expect(page.locator("#doctor-summary")).to_have_text("1 of 3 checks failed")
    expect(page.locator('#doctor-list [data-check="forward_policy"]')).to_have_attribute("data-severity", "warning")
    page.set_viewport_size(PHONE)
    no_horizontal_scroll(page)
    code = first.locator(".fix code").bounding_box()
    assert code["x"] + code["width"] <= PHONE["width"]
    SHOTS.mkdir(exist_ok=True)
    page.locator("#doctor-card").screenshot(path=str(SHOTS / "doctor-phone.png"))

    # The same checks as `data` rows with the structured keys (and the older `detail`, `warning`).
    rows = [{**c, "name": c["id"].replace("_", " "), "observed": f"{c['observed']} (rows)", "detail": c["observed"],
             "warning": c["severity"] == "warning"} for c in body["checks"]]
    page.unroute("**/api/v1/system/network/doctor")
    page.route("**/api/v1/system/network/doctor", lambda route: route.fulfill(json={"data": rows}))
    page.click("#doctor-run")
    expect(page.locator("#doctor-list li").first.locator(".detail")).to_have_text(
        "no answer from 10.10.0.1:53 in 2 s (rows)")
    expect(page.locator("#doctor-list li").first).to_have_attribute("data-check", "dns_answering")
    expect(page.locator("#doctor-list li").first.locator(".name")).to_have_text("Dns answering")
    expect(page.locator("#doctor-summary")).to_have_text("1 of 3 checks failed")


def test_health_from_structured_checks_and_up_asked_while_down(service, page):
    """The health rows come from the status's `checks` ids, not from its English reasons; while the
    network is down as asked, bringing it up asks first, and a dismissed question does nothing."""
    base_url, token, _ = service
    status = httpx_json(base_url, token, "/api/v1/system/network/status")
    data = {**status["data"], "health_status": "down", "reasons": ["prox-net is down as requested"],
            "checks": [{"id": "bridge", "ok": False, "severity": "error", "observed": "prox-net is absent",
                        "fix": "proximity up"},
                       {"id": "dnsmasq_running", "ok": True, "severity": "error", "observed": "pid 42", "fix": ""}]}
    page.route("**/api/v1/system/network/status", lambda route: route.fulfill(json={"message": "down", "data": data}))
    initialized = []
    page.on("request", lambda r: r.url.endswith("/system/network/initialize") and initialized.append(r.url))
    sign_in(page, base_url, token)
    expect(page.locator("#health")).to_have_text("down")
    expect(page.locator("#checks li")).to_have_count(2)
    expect(page.locator('#checks [data-check="bridge"]')).to_have_attribute("data-ok", "false")
    expect(page.locator('#checks [data-check="bridge"] .fix code')).to_have_text("proximity up")
    expect(page.locator('#checks [data-check="dnsmasq_running"]')).to_have_attribute("data-ok", "true")
    expect(page.locator("#converge")).to_have_text("Bring the network up")
    questions = []

    def dismiss(dialog):
        questions.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.click("#converge")
    expect(page.locator("#converge")).to_be_enabled()
    assert questions and "proximity down" in questions[0] and initialized == []


def test_migrate_from_the_container_page(service, page):
    from proximity.containers.base import ContainerSpec

    base_url, token, context = service
    backend = context.containers.backend
    legacy = backend.create(ContainerSpec("legacy-ui", "name=eth0,bridge=vmbr0,ip=198.51.100.71/24,gw=198.51.100.1"))
    try:
        backend.start(legacy.vmid)
        sign_in(page, base_url, token)
        pictured(page, "migrate", lambda: migrate_it(page, legacy.vmid))
        assert "bridge=prox-net" in backend.get_net0(legacy.vmid)
    finally:
        context.containers.destroy(str(legacy.vmid))


def migrate_it(page, vmid: int) -> None:
    page.goto(page.url.split("#")[0] + f"#ct/{vmid}")
    expect(page.locator("#ct-title")).to_have_text("legacy-ui")
    expect(page.locator("#ct-bridge")).to_have_text("vmbr0")
    page.click('#ct-page [data-ct-action="migrate"]')
    expect(page.locator("#migrate-vmid")).to_have_value(str(vmid))
    page.click("#migrate-preview")
    expect(page.locator("#migrate-plan")).to_be_visible()
    expect(page.locator("#migrate-plan-title")).to_contain_text(f"CT {vmid} legacy-ui")
    page.fill("#migrate-timeout", "30")
    page.click("#migrate-submit")
    expect(page.locator("#job-what")).to_have_text(f"Migrate CT {vmid}")
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=120_000)
    page.goto(page.url.split("#")[0] + f"#ct/{vmid}")
    expect(page.locator("#ct-bridge")).to_have_text("prox-net")
    expect(page.locator("#ct-dns")).to_have_text("legacy-ui.prox.local")
    expect(page.locator("#ct-events li[data-kind='migrate']")).to_contain_text(f"Migrate CT {vmid} succeeded")
    # Asked again, it is refused in a sentence: it is on the bridge already.
    page.click("#ct-back")
    page.fill("#migrate-vmid", str(vmid))
    page.click("#migrate-preview")
    expect(page.locator("#migrate-error")).to_contain_text(f"Could not migrate CT {vmid}. CT {vmid} (legacy-ui) is already on prox-net.")


def test_api_docs_work_offline(service, page):
    base_url, _, _ = service
    outside = []
    page.on("request", lambda request: request.url.startswith(base_url) or outside.append(request.url))
    page.goto(base_url + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Proximity")
    expect(page.locator(".swagger-ui .opblock-summary-path", has_text="/api/v1/system/info").first).to_be_visible()
    assert outside == [], f"/docs requested something other than the service: {outside}"


def test_the_zones_card_shows_every_zone_with_its_ipv6_prefix_leases_and_health(service, page, sandbox):
    """Last: it adds a zone (through the CLI: the service follows zones.toml), then deletes it."""
    base_url, token, context = service
    proximity("zone", "create", "web", "--subnet", "10.20.0.0/24", "--ipv6", "auto", "--sandbox", sandbox.name)
    try:
        prefix = next(z for z in httpx_json(base_url, token, "/api/v1/zones")["data"] if z["name"] == "web")["ipv6_prefix"]
        assert prefix and prefix.endswith("/64"), prefix
        sign_in(page, base_url, token)
        rows = page.locator("#zones tbody tr")
        expect(rows).to_have_count(2, timeout=30_000)
        web = page.locator('#zones tr[data-zone="web"]')
        expect(web.locator('[data-col="subnet"]')).to_have_text("10.20.0.0/24")
        expect(web.locator('[data-col="ipv6_prefix"]')).to_have_text(prefix)
        expect(web.locator('[data-col="health"] .badge')).to_have_text("healthy", timeout=30_000)
        expect(web.locator('[data-col="leases"]')).to_have_text("0 of 151, 0 DHCPv6")
        default = page.locator('#zones tr[data-zone="prox-net"]')
        expect(default.locator('[data-col="ipv6_prefix"]')).to_have_text("off")  # opt-in for the default zone
        expect(default.locator('[data-col="bridge"]')).to_have_text("prox-net")
        # pyroute2 runs its own event loop: a thread of its own, beside Playwright's
        client = off_loop(sandboxes.attach_client, sandbox, "web-1", bridge="pz-web")
        try:  # a lease in web shows in its row on a later refresh
            expect(web.locator('[data-col="leases"]')).to_have_text("1 of 151, 0 DHCPv6", timeout=30_000)
        finally:
            off_loop(sandboxes.detach_client, sandbox, client.hostname)
        OUTPUT.mkdir(exist_ok=True)
        page.locator('[data-testid="zones-card"]').screenshot(path=str(OUTPUT / "zones.png"))
    finally:
        proximity("zone", "delete", "web", "--force", "--sandbox", sandbox.name, check=False)
    expect(page.locator("#zones tbody tr")).to_have_count(1, timeout=30_000)


def off_loop(call, *args, **kwargs):
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call, *args, **kwargs).result()
