"""The network's commands: up, down, status, leases, doctor."""

from __future__ import annotations

from typing import Annotated

import typer

from proximity import sandbox as sandboxes
from proximity.cli.common import (ApiCaOpt, ApiOpt, DryRunOpt, Fetched, InsecureHttpOpt, InterfacesOpt, JsonOpt,
                                  SandboxOpt, Table, TokenOpt, UplinkOpt, ZoneOpt, app, as_text, changes_host, err,
                                  friendly, manager_for, out, print_json, remote, remote_call, show_report)
from proximity.errors import InputError
from proximity.network.reconciler import NetworkManager

@app.command()
@friendly
@changes_host("up")
def up(sandbox: SandboxOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False,
       interfaces_file: InterfacesOpt = None, uplink: UplinkOpt = None, api: ApiOpt = None,
       token: TokenOpt = None, api_ca: ApiCaOpt = None, insecure_http: InsecureHttpOpt = False) -> None:
    """Converge the host: bridge, NAT and forwarding, dnsmasq. Safe to run again.

    Records the intent "up" (with --uplink and --interfaces-file): the service keeps the network up.
    """
    if api:
        result = remote(api, token, sandbox, "POST", "/api/v1/system/network/initialize", {"dry_run": dry_run},
                        api_ca, insecure_http)
        print_json(result) if as_json else out.print("[green]✓[/] converged by the service", highlight=False)
        return
    manager = manager_for(sandbox, dry_run, interfaces_file=interfaces_file, uplink=uplink)
    report = manager.up()
    show_report(report, as_json, "up")
    if not dry_run and not as_json:
        show_status(manager, as_json=False)


@app.command()
@friendly
@changes_host("down")
def down(sandbox: SandboxOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False,
         interfaces_file: InterfacesOpt = None, uplink: UplinkOpt = None,
         purge: Annotated[bool, typer.Option("--purge", help="Also delete the leases file.")] = False,
         force: Annotated[bool, typer.Option(
             "--force", help="Go ahead while managed containers use the bridge: they are cut off (and named).")] = False,
         zone: Annotated[str | None, typer.Option(
             "--zone", help="Take down this zone only (the service leaves it down until `proximity up`).")] = None,
         ) -> None:
    """Remove the managed block, rules, service and config (leases are kept unless --purge).

    Records the intent "down": the service leaves the network down until `proximity up`. Refused while
    managed containers use the bridge, unless --force.
    """
    manager = manager_for(sandbox, dry_run, interfaces_file=interfaces_file, uplink=uplink)
    if interfaces_file is None and uplink is None:
        manager = manager.toward_intent()  # the file the last `up` was given
    report = manager.down(purge=purge, force=force, zone=zone)
    show_report(report, as_json, "down")
    if not dry_run and not as_json:
        what = f"Zone {zone} is" if zone else "The network is"
        out.print(f"{what} down as requested: the service (`proximity serve`) leaves it down until "
                  "`proximity up`.", highlight=False)


def status_exit(healths: list[str]) -> int:
    """The worst zone decides, as `systemctl is-active` tells inactive from failed: 1 when any zone is degraded
    or unhealthy, 3 only when every zone is down as requested, else 0 (a zone down on purpose is fine)."""
    if any(h in ("degraded", "unhealthy") for h in healths):
        return 1
    return 3 if healths and all(h == "down" for h in healths) else 0


@app.command()
@friendly
def status(sandbox: SandboxOpt = None, as_json: JsonOpt = False, api: ApiOpt = None, token: TokenOpt = None,
           api_ca: ApiCaOpt = None, insecure_http: InsecureHttpOpt = False) -> None:
    """Show whether the managed network is healthy, every zone, read from netlink and /proc.

    Exit status (with --json too), the worst zone's: 0 healthy, 1 degraded or unhealthy, 3 down as requested
    (`proximity down`; only when every zone is), 2 refused input. A zone down on purpose beside healthy ones is 0.
    """
    if api:
        data = remote_call(api, token, sandbox, "GET", "/api/v1/system/network/status", api_ca, insecure_http)
        rows = remote_call(api, token, sandbox, "GET", "/api/v1/zones", api_ca, insecure_http)
        _, healths = show_status(RemoteStatus(data, rows), as_json)
    else:
        _, healths = show_status(manager_for(sandbox), as_json, reprobe=True)
    raise typer.Exit(status_exit(healths))


class RemoteStatus:
    """The service's status answer (and its zones), shown by `show_status` as a local one is."""

    def __init__(self, data: dict, rows: list[dict]):
        self.data, self.rows = data, rows

    def status(self, reprobe: bool = False) -> Fetched:
        return Fetched(self.data)

    def zone_rows(self, st) -> list[dict]:
        return self.rows


def _zone_rows(manager, st) -> tuple[list[dict], bool]:
    """Every zone as `zone list --json` shows it, the default first with ``st``; False: the rest unreadable."""
    if isinstance(manager, RemoteStatus):
        return manager.zone_rows(st), True
    from proximity.errors import ProximityError
    from proximity.network.zone_status import with_default, zone_row
    from proximity.spec.view import default_view

    try:
        return [zone_row(view, status) for view, status in with_default(manager, st)], True
    except ProximityError as exc:  # a damaged zones.json: the default zone's status still stands, and exits 1
        err.print(f"[yellow]warning:[/] the further zones cannot be read: {as_text(str(exc))}", highlight=False)
        return [zone_row(default_view(manager.settings), st)], False


COLOURS = {"healthy": "green", "degraded": "yellow", "unhealthy": "red", "down": "cyan"}


def show_status(manager: NetworkManager, as_json: bool, reprobe: bool = False):
    """The default zone's table (or JSON, with a "zones" list), then one line per further zone; (st, every
    zone's health, an unreadable zones file as unhealthy)."""
    st = manager.status(reprobe=reprobe)
    rows, readable = _zone_rows(manager, st)
    healths = [st.health_status, *(row["health"] for row in rows[1:]), *([] if readable else ["unhealthy"])]
    if as_json:
        print_json({**st.as_dict(), "zones": rows})
        return st, healths
    colour = COLOURS[st.health_status]
    table = Table(title=f"{st.bridge_name} status: [{colour}]{st.health_status}[/]", show_header=False)
    yes = lambda ok: "[green]yes[/]" if ok else "[red]no[/]"  # noqa: E731
    for key, value in [
        ("bridge", f"{st.bridge_name} ({st.bridge_ip}, subnet {st.subnet})"),
        ("bridge up", yes(st.bridge_up)), ("gateway assigned", yes(st.gateway_assigned)),
        ("uplink", st.uplink or "-"), ("NAT configured", yes(st.nat_configured)),
        ("isolation rules", yes(st.isolation_configured)), ("ip_forward", yes(st.ip_forward)),
        ("dnsmasq running", yes(st.dhcp_service_running) + (f" (pid {st.dns_pid})" if st.dns_pid else "")),
        ("DNS answering", yes(st.dns_answering)), ("DHCP served", yes(st.dhcp_served)),
        ("DHCP range", st.dhcp_range), ("DNS domain", st.dns_domain),
        ("leases in use", f"{st.leases_in_use} of {st.pool_size}"),
        ("intent", st.intent + {"legacy": " (no record: read from the interfaces file)",
                                "damaged": " (the record is damaged)"}.get(st.intent_source, "")),
    ]:
        table.add_row(key, value)
    out.print(table)
    from proximity.cli.checks import render_problems

    render_problems(st.checks, colour, out)
    for row in rows[1:]:  # the further zones, one line each (`zone show NAME` has the rest)
        reasons = f": {as_text('; '.join(row['reasons']))}" if row["reasons"] and row["health"] != "healthy" else ""
        out.print(f"zone {row['name']}  {row['bridge']}  {', '.join(row['subnets'])}  "
                  f"[{COLOURS[row['health']]}]{row['health']}[/]{reasons}", highlight=False)
    return st, healths


@app.command()
@friendly
def leases(sandbox: SandboxOpt = None, as_json: JsonOpt = False, zone: ZoneOpt = None, api: ApiOpt = None,
           token: TokenOpt = None, api_ca: ApiCaOpt = None, insecure_http: InsecureHttpOpt = False) -> None:
    """List DHCP leases (v4 and v6) from dnsmasq's lease files: every zone's, or --zone's."""
    from proximity.network.zone_views import zone_view_of, zone_views

    manager = manager_for(sandbox)
    if api:
        if zone:
            raise InputError("--zone with --api: the service's API lists the default zone's leases only so far",
                             fix="run `proximity leases --zone ZONE` on the host, or leave out --zone")
        answer = remote_call(api, token, sandbox, "GET", "/api/v1/system/network/leases", api_ca, insecure_http,
                             whole=True)
        views = [manager.settings]
        found = [(manager.settings, Fetched(lease)) for lease in answer["data"]]
        warnings = answer["warnings"]
    else:
        views = [zone_view_of(manager, zone)] if zone else list(zone_views(manager))
        found, warnings = [], []
        for view in views:
            held, said = manager.leases(view)
            found += [(view, lease) for lease in held]
            warnings += said
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if as_json:
        print_json([{**lease.as_dict(), "zone": getattr(view, "zone", "prox-net")} for view, lease in found])
        return
    title = ", ".join(str(v.leases_file) for v in views)
    table = Table(title=f"DHCP leases ({title})")
    for column in ("zone", "DNS name", "IP", "client", "expires"):
        table.add_column(column, no_wrap=True)
    for view, lease in found:
        name = f"{lease.hostname}.{view.domain}" if lease.hostname else "-"
        client = lease.client_text() if hasattr(lease, "client_text") else lease.mac
        if getattr(lease, "duid", None):
            client += f" DUID {lease.duid}"
        table.add_row(getattr(view, "zone", "prox-net"), name, lease.ip, client, lease.expires_text())
    out.print(table)


@app.command()
@friendly
def doctor(sandbox: SandboxOpt = None, as_json: JsonOpt = False, api: ApiOpt = None, token: TokenOpt = None,
           api_ca: ApiCaOpt = None, insecure_http: InsecureHttpOpt = False) -> None:
    """Run every troubleshooting check, orphans included; each failure comes with the exact fix."""
    from proximity.doctor import doctor_dict, run_doctor

    if api:
        checks = [Fetched(check) for check in remote_call(api, token, sandbox, "GET", "/api/v1/system/network/doctor",
                                                          api_ca, insecure_http)]
    else:
        checks = run_doctor(manager_for(sandbox), sandboxes.load(sandbox) if sandbox else None)
    if as_json:
        print_json([check.as_dict() if api else doctor_dict(check) for check in checks])
    else:
        from proximity.cli.checks import render_doctor

        render_doctor(checks, out)
    if any(not check.ok and check.severity == "error" for check in checks):
        raise typer.Exit(1)
