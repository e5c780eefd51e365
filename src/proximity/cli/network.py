"""The network's commands: up, down, status, leases, doctor."""

from __future__ import annotations

from typing import Annotated

import typer

from proximity import sandbox as sandboxes
from proximity.cli.common import (ApiCaOpt, ApiOpt, DryRunOpt, InsecureHttpOpt, InterfacesOpt, JsonOpt, SandboxOpt,
                                  Table, TokenOpt, UplinkOpt, app, err, friendly, manager_for, out, print_json,
                                  remote, show_report)
from proximity.network.reconciler import NetworkManager

@app.command()
@friendly
def up(sandbox: SandboxOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False,
       interfaces_file: InterfacesOpt = None, uplink: UplinkOpt = None, api: ApiOpt = None,
       token: TokenOpt = None, api_ca: ApiCaOpt = None, insecure_http: InsecureHttpOpt = False) -> None:
    """Converge the host: bridge, NAT and forwarding, dnsmasq. Safe to run again."""
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
def down(sandbox: SandboxOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False,
         interfaces_file: InterfacesOpt = None, uplink: UplinkOpt = None,
         purge: Annotated[bool, typer.Option("--purge", help="Also delete the leases file.")] = False) -> None:
    """Remove the managed block, rules, service and config (leases are kept unless --purge)."""
    report = manager_for(sandbox, dry_run, interfaces_file=interfaces_file, uplink=uplink).down(purge=purge)
    show_report(report, as_json, "down")


@app.command()
@friendly
def status(sandbox: SandboxOpt = None, as_json: JsonOpt = False) -> None:
    """Show whether the managed network is healthy, read from netlink and /proc."""
    show_status(manager_for(sandbox), as_json, reprobe=True)


def show_status(manager: NetworkManager, as_json: bool, reprobe: bool = False) -> None:
    st = manager.status(reprobe=reprobe)
    if as_json:
        print_json(st.as_dict())
        return
    colour = {"healthy": "green", "degraded": "yellow", "unhealthy": "red"}[st.health_status]
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
    ]:
        table.add_row(key, value)
    out.print(table)
    for reason in st.reasons:
        out.print(f"[{colour}]•[/] {reason}", highlight=False)


@app.command()
@friendly
def leases(sandbox: SandboxOpt = None, as_json: JsonOpt = False) -> None:
    """List DHCP leases from dnsmasq's lease file."""
    manager = manager_for(sandbox)
    found, warnings = manager.leases()
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if as_json:
        print_json([lease.as_dict() for lease in found])
        return
    table = Table(title=f"DHCP leases ({manager.settings.leases_file})")
    for column in ("DNS name", "IP", "MAC", "expires"):
        table.add_column(column, no_wrap=True)
    for lease in found:
        expires = lease.expires_text()
        name = f"{lease.hostname}.{manager.settings.domain}" if lease.hostname else "-"
        table.add_row(name, lease.ip, lease.mac, expires)
    out.print(table)


@app.command()
@friendly
def doctor(sandbox: SandboxOpt = None, as_json: JsonOpt = False) -> None:
    """Run every troubleshooting check, orphans included; each failure comes with the exact fix."""
    from proximity.doctor import run_doctor

    checks = run_doctor(manager_for(sandbox), sandboxes.load(sandbox) if sandbox else None)
    if as_json:
        print_json([check.__dict__ for check in checks])
    else:
        table = Table(title="proximity doctor")
        for column in ("check", "result", "detail", "fix"):
            table.add_column(column)
        for check in checks:
            result = "[green]pass[/]" if check.ok else ("[yellow]warn[/]" if check.warning else "[red]FAIL[/]")
            table.add_row(check.name, result, check.detail, "" if check.ok else check.fix)
        out.print(table)
    if any(not check.ok and not check.warning for check in checks):
        raise typer.Exit(1)
