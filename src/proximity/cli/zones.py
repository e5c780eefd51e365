"""`proximity zone ...`: the isolated networks of the host (the default zone is prox-net)."""

from __future__ import annotations

from typing import Annotated

import typer

from proximity.cli.common import (DryRunOpt, JsonOpt, SandboxOpt, Table, app, as_text, changes_host, friendly,
                                  manager_for, out, print_json, settings_for, show_report)

zone_app = typer.Typer(help="Zones: isolated networks, each with its bridge, subnets, DNS domain and dnsmasq.",
                       no_args_is_help=True)
app.add_typer(zone_app, name="zone")

SubnetOpt = Annotated[str | None, typer.Option("--subnet", help="IPv4 subnet, e.g. 10.20.0.0/24 (default: a free /24).")]
DomainOpt = Annotated[str | None, typer.Option("--domain", help="DNS domain (default: NAME.internal).")]
RangeOpt = Annotated[str | None, typer.Option("--dhcp-range", help="DHCP range inside the subnet, e.g. 10.20.0.100-10.20.0.250.")]
Ipv6Opt = Annotated[str | None, typer.Option("--ipv6", help="auto (a /64 of this host's ULA prefix), off, or a routed /64.")]
ZoneArg = Annotated[str, typer.Argument(help="The zone's name: lowercase letters, digits and '-' (e.g. web).",
                                         show_default=False)]
PeerArg = Annotated[str, typer.Argument(help="A zone's name (prox-net is the default zone).", show_default=False)]
HostServicesOpt = Annotated[bool | None, typer.Option(
    "--host-services/--no-host-services", help="May the zone's containers reach the host's own services (ssh, 8006)?",
    show_default=False)]


def _admin(sandbox: str | None, dry_run: bool):
    from proximity.zone_admin import ZoneAdmin

    return ZoneAdmin(lambda: settings_for(sandbox), dry_run)


@zone_app.command("create")
@friendly
@changes_host("zone create")
def zone_create(name: ZoneArg, sandbox: SandboxOpt = None, subnet: SubnetOpt = None, domain: DomainOpt = None,
                dhcp_range: RangeOpt = None, ipv6: Ipv6Opt = None, host_services: HostServicesOpt = None,
                dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Create zone NAME and bring it up (kept in zones.toml, beside proximity.toml)."""
    report = _admin(sandbox, dry_run).create(name, subnet=subnet, domain=domain, dhcp_range=dhcp_range, ipv6=ipv6,
                                             host_services=host_services)
    show_report(report, as_json, f"zone create {name}")


@zone_app.command("set")
@friendly
@changes_host("zone set")
def zone_set(name: ZoneArg, sandbox: SandboxOpt = None, subnet: SubnetOpt = None, domain: DomainOpt = None,
             dhcp_range: RangeOpt = None, ipv6: Ipv6Opt = None, host_services: HostServicesOpt = None,
             dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Change zone NAME (`zone set prox-net --ipv6 auto` turns IPv6 on in the default zone)."""
    report = _admin(sandbox, dry_run).set(name, subnet=subnet, domain=domain, dhcp_range=dhcp_range, ipv6=ipv6,
                                          host_services=host_services)
    show_report(report, as_json, f"zone set {name}")


@zone_app.command("delete")
@friendly
@changes_host("zone delete")
def zone_delete(name: ZoneArg, sandbox: SandboxOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False,
                force: Annotated[bool, typer.Option(
                    "--force", help="Delete it although containers have reservations there: they are cut off.")] = False,
                ) -> None:
    """Delete zone NAME: its bridge, dnsmasq, leases, reservations, rules and files. Refused while in use."""
    show_report(_admin(sandbox, dry_run).delete(name, force=force), as_json, f"zone delete {name}")


@zone_app.command("peer")
@friendly
@changes_host("zone peer")
def zone_peer(a: PeerArg, b: PeerArg, sandbox: SandboxOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Let zones A and B reach each other (names resolve across by their full name, web.B-domain)."""
    show_report(_admin(sandbox, dry_run).peer(a, b), as_json, f"zone peer {a} {b}")


@zone_app.command("unpeer")
@friendly
@changes_host("zone unpeer")
def zone_unpeer(a: PeerArg, b: PeerArg, sandbox: SandboxOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Isolate zones A and B from each other again."""
    show_report(_admin(sandbox, dry_run).peer(a, b, join=False), as_json, f"zone unpeer {a} {b}")


@zone_app.command("list")
@friendly
def zone_list(sandbox: SandboxOpt = None, as_json: JsonOpt = False) -> None:
    """List the zones: bridge, subnets, gateway, domain, IPv6 prefix, health."""
    from proximity.network.zone_status import zone_row, zone_statuses

    rows = [zone_row(view, status) for view, status in zone_statuses(manager_for(sandbox))]
    if as_json:
        print_json(rows)
        return
    table = Table(title="Zones")
    for column in ("zone", "bridge", "subnets", "gateway", "domain", "health"):
        table.add_column(column, no_wrap=True)
    colour = {"healthy": "green", "degraded": "yellow", "unhealthy": "red", "down": "cyan"}
    for row in rows:
        table.add_row(row["name"], row["bridge"], ", ".join(row["subnets"]), row["gateway"], row["domain"],
                      f"[{colour[row['health']]}]{row['health']}[/]")
    out.print(table)


@zone_app.command("show")
@friendly
def zone_show(name: ZoneArg, sandbox: SandboxOpt = None, as_json: JsonOpt = False) -> None:
    """Show zone NAME: its settings, files, service and health with its reasons."""
    from proximity.errors import NotFoundError
    from proximity.network.zone_status import zone_row, zone_statuses

    found = [(v, st) for v, st in zone_statuses(manager_for(sandbox)) if v.zone == name]
    if not found:
        raise NotFoundError(f"there is no zone {name!r} (`proximity zone list`)")
    view, status = found[0]
    row = {**zone_row(view, status), "interfaces_file": str(view.interfaces_file),
           "dnsmasq_conf": str(view.dnsmasq_conf), "leases_file": str(view.leases_file),
           "reservations": str(view.reservations_db)}
    if as_json:
        print_json(row)
        return
    table = Table(title=f"zone {name}", show_header=False)
    for key, value in row.items():
        if key != "reasons":
            table.add_row(key, as_text(", ".join(value) if isinstance(value, list) else str(value)))
    out.print(table)
    for reason in status.reasons:
        out.print(f"  [yellow]•[/] {as_text(reason)}", highlight=False)
