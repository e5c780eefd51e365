"""The containers' commands: `ct ...`, gc and migrate."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import typer

from proximity.cli.common import (ApiCaOpt, ApiOpt, DryRunOpt, Fetched, InsecureHttpOpt, JsonOpt, SandboxOpt, Table, as_text,
                                  TokenOpt, ZoneOpt, app, changes_host, ct_app, err, friendly, hostnames, manager_for, out,
                                  print_json, remote, remote_call)
from proximity.containers.base import BackendError
from proximity.containers.guest_firewall import applies
from proximity.errors import ConflictError, InputError, NotFoundError
from proximity.settings import check_hostname

if TYPE_CHECKING:
    from proximity.containers.manager import ContainerInfo, ContainerManager

def containers_for(sandbox: str | None, recover: bool = True, zone: str | None = None, ref: str | None = None,
                   **overrides: Any) -> ContainerManager:
    """The container manager of ``zone`` (default prox-net; given ``ref``, a container, and no zone: the zone
    that holds it); with ``recover``, first finish or undo what an interrupted command left, in every zone."""
    from proximity.containers import zoned
    from proximity.containers.factory import backend_for  # imports proxmoxer only when needed

    network = manager_for(sandbox, **overrides)
    backend = backend_for(network.settings)
    if recover:
        for line in zoned.recover_all(network, backend):
            err.print(f"[yellow]recovered an interrupted command:[/] {as_text(line)}", highlight=False)
    return zoned.locate(network, backend, ref, zone) if ref is not None else zoned.managers(network, backend, zone)[0]


def no_zone_with_api(api: str | None, zone: str | None) -> None:
    if api and zone:
        raise InputError("--zone with --api: the service's API acts on the default zone only so far",
                         fix="run the command on the host without --api, or leave out --zone")


def show_containers(found: list[ContainerInfo], as_json: bool) -> None:
    if as_json:
        print_json([c.as_dict() for c in found])
        return
    table = Table(title="containers")
    for column in ("id", "hostname", "zone", "state", "MAC", "IP", "DNS name", "bridge", "backend"):
        table.add_column(column, no_wrap=True)
    for c in found:
        state = f"[green]{c.state}[/]" if c.state == "running" else c.state
        table.add_row(str(c.vmid), c.hostname, getattr(c, "zone", None) or "-", state, c.mac or "-", c.ip or "-",
                      c.dns_name or "-", c.bridge or "-", c.backend)
    out.print(table)


@ct_app.command("create")
@friendly
@changes_host("ct create")
def ct_create(hostname: Annotated[str, typer.Argument(help="The new container's hostname (RFC 1123 label, e.g. "
                                                                "nginx-01): its DNS name is HOSTNAME.DOMAIN.")],
              sandbox: SandboxOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False, zone: ZoneOpt = None,
              template: Annotated[str | None, typer.Option(help="Proxmox template volume id.")] = None,
              memory: Annotated[int, typer.Option(min=16, help="Memory in MiB.")] = 256,
              cores: Annotated[int, typer.Option(min=1, max=8192, help="CPU cores.")] = 1,
              start: Annotated[bool, typer.Option("--start/--no-start", help="Start it once created.")] = True,
              api: ApiOpt = None, token: TokenOpt = None, api_ca: ApiCaOpt = None,
              insecure_http: InsecureHttpOpt = False) -> None:
    """Create a container on the managed bridge with a fixed MAC, a reserved address and a DNS name."""
    check_hostname(hostname)
    no_zone_with_api(api, zone)
    if api and not dry_run:
        body = {"hostname": hostname, "memory": memory, "cores": cores, "template": template, "start": start}
        result = remote(api, token, sandbox, "POST", "/api/v1/containers", body, api_ca, insecure_http)
        if as_json:
            print_json(result)
        else:
            out.print(f"[green]✓[/] CT {result['vmid']} {hostname}: {result['ip']} ({result['dns_name']})")
            if result.get("note"):
                out.print(f"  [yellow]note:[/] {as_text(result['note'])}", highlight=False)
        return
    manager = containers_for(sandbox, recover=not dry_run, zone=zone)
    if dry_run:
        reservation, net0 = manager.plan_create(hostname)
        dhcp = applies(manager.backend, net0)  # the guest firewall option dhcp: 1 (containers/guest_firewall.py)
        plan = {"hostname": hostname, "ip": reservation.ip, "mac": reservation.mac, "net0": net0,
                "dns_name": f"{hostname}.{manager.settings.domain}", "backend": manager.backend.name,
                "zone": manager.settings.zone,
                "guest_firewall_dhcp": dhcp}
        if as_json:
            print_json(plan)
        else:
            out.print(f"Dry run: would reserve {reservation.ip} / {reservation.mac} for {hostname}, create it on "
                      f"{manager.backend.name} with net0 {net0}" + (", allow DHCP through its guest firewall "
                      "(dhcp: 1)" if dhcp else "") + (" and start it." if start else "."))
        return
    info = manager.create(hostname, memory=memory, cores=cores, template=template, start=start)
    if as_json:
        print_json(info.as_dict())
    else:
        out.print(f"[green]✓[/] CT {info.vmid} {info.hostname}: {info.ip} ({info.dns_name}), MAC {info.mac}, {info.state}")
        if info.note:
            out.print(f"  [yellow]note:[/] {as_text(info.note)}", highlight=False)


RefArg = Annotated[str, typer.Argument(metavar="HOST|ID", help="The container's hostname or id (VMID).",
                                        autocompletion=hostnames)]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Destroy it even if it is running (stopped first).")]


@ct_app.command("list")
@friendly
def ct_list(sandbox: SandboxOpt = None, as_json: JsonOpt = False, zone: ZoneOpt = None, api: ApiOpt = None,
            token: TokenOpt = None, api_ca: ApiCaOpt = None, insecure_http: InsecureHttpOpt = False) -> None:
    """List containers with their zone, state, MAC, address and DNS name (--zone: that zone's only)."""
    no_zone_with_api(api, zone)
    if api:
        found = [Fetched(c) for c in remote_call(api, token, sandbox, "GET", "/api/v1/containers", api_ca,
                                                 insecure_http)]
        show_containers(found, as_json)
        return
    from proximity.containers import zoned

    manager = containers_for(sandbox, recover=False)
    show_containers(zoned.list_all(manager.network, manager.backend, zone), as_json)


ct_app.command("ls", hidden=True)(ct_list)


@ct_app.command("show")
@friendly
def ct_show(ref: RefArg, sandbox: SandboxOpt = None, as_json: JsonOpt = False, zone: ZoneOpt = None,
            api: ApiOpt = None, token: TokenOpt = None, api_ca: ApiCaOpt = None,
            insecure_http: InsecureHttpOpt = False) -> None:
    """Show one container: its zone, state, MAC, address, DNS name and bridge."""
    no_zone_with_api(api, zone)
    if api:
        data = remote_call(api, token, sandbox, "GET", f"/api/v1/containers/{quote(ref, safe='')}", api_ca,
                           insecure_http)
    else:
        manager = containers_for(sandbox, zone=zone, ref=ref)
        data = manager.info(manager.resolve(ref)).as_dict()
    if as_json:
        print_json(data)
        return
    table = Table(title=f"CT {data['vmid']} {data['hostname']}", show_header=False)
    for key, value in data.items():
        table.add_row(key.replace("_", " "), "-" if value is None else str(value))
    out.print(table)


def _ct_action(verb: str, ref: str, sandbox: str | None, dry_run: bool, as_json: bool = False, force: bool = False,
               api: str | None = None, connect: tuple = (), zone: str | None = None) -> None:
    """start, stop or destroy, here or through the service (``connect``: token, api_ca, insecure_http), in
    ``zone`` or the zone that holds ``ref``."""
    token, api_ca, insecure_http = connect or (None, None, False)
    no_zone_with_api(api, zone)
    path = f"/api/v1/containers/{quote(ref, safe='')}"
    if api:
        info = Fetched(remote_call(api, token, sandbox, "GET", path, api_ca, insecure_http))
    else:
        manager = containers_for(sandbox, recover=not dry_run, zone=zone, ref=ref)
        try:
            info = manager.info(manager.resolve(ref))
        except NotFoundError:
            if verb != "destroy":
                raise
            info = None  # destroy also releases a reservation whose container is gone
    if verb == "destroy" and info is not None and info.state == "running" and not force:
        raise ConflictError(f"CT {info.vmid} ({info.hostname}) is running: nothing was destroyed",
                            fix=f"stop it first (`proximity ct stop {ref}`), or pass --force to stop and destroy it")
    if verb == "destroy" and not api:
        plan = manager.plan_destroy(ref)  # with the reservation it releases
    else:
        plan = f"{verb} CT {info.vmid} ({info.hostname})"
    if dry_run:
        print_json({"dry_run": True, "plan": plan}) if as_json else out.print(f"Dry run: would {plan}.",
                                                                            highlight=False)
        return
    if verb == "destroy":
        if api:
            remote_call(api, token, sandbox, "DELETE", path, api_ca, insecure_http)
        else:
            manager.destroy(ref)
        if as_json:
            print_json({"vmid": info.vmid if info else None, "hostname": info.hostname if info else ref,
                        "destroyed": True, "done": plan})
        else:
            out.print(f"[green]✓[/] done: {plan}", highlight=False)
        return
    if api:
        info = Fetched(remote_call(api, token, sandbox, "POST", f"{path}/{verb}", api_ca, insecure_http))
    else:
        info = getattr(manager, verb)(str(info.vmid))
    if as_json:
        print_json(info.as_dict())
    else:
        note = getattr(info, "note", None)
        out.print(f"[green]✓[/] CT {info.vmid} {info.hostname}: {info.state}" + (f" ({note})" if note else ""))


@ct_app.command("start")
@friendly
@changes_host("ct start")
def ct_start(ref: RefArg, sandbox: SandboxOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False,
             zone: ZoneOpt = None,
             api: ApiOpt = None, token: TokenOpt = None, api_ca: ApiCaOpt = None,
             insecure_http: InsecureHttpOpt = False) -> None:
    """Start a container (by id or hostname)."""
    _ct_action("start", ref, sandbox, dry_run, as_json, api=api, connect=(token, api_ca, insecure_http), zone=zone)


@ct_app.command("stop")
@friendly
@changes_host("ct stop")
def ct_stop(ref: RefArg, sandbox: SandboxOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False,
             zone: ZoneOpt = None,
            api: ApiOpt = None, token: TokenOpt = None, api_ca: ApiCaOpt = None,
            insecure_http: InsecureHttpOpt = False) -> None:
    """Shut a container down cleanly (by id or hostname)."""
    _ct_action("stop", ref, sandbox, dry_run, as_json, api=api, connect=(token, api_ca, insecure_http), zone=zone)


@ct_app.command("destroy")
@friendly
@changes_host("ct destroy")
def ct_destroy(ref: RefArg, sandbox: SandboxOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False,
               force: ForceOpt = False, zone: ZoneOpt = None, api: ApiOpt = None, token: TokenOpt = None,
               api_ca: ApiCaOpt = None, insecure_http: InsecureHttpOpt = False) -> None:
    """Destroy a container and release its reservation and lease (a running one only with --force)."""
    _ct_action("destroy", ref, sandbox, dry_run, as_json, force, api, (token, api_ca, insecure_http), zone)


ct_app.command("rm", hidden=True)(ct_destroy)
ct_app.command("delete", hidden=True)(ct_destroy)


@ct_app.command("exec")
@friendly
def ct_exec(ref: RefArg, command: Annotated[list[str], typer.Argument(
                help="The command and its arguments (put `--` before it when it has options).")],
            sandbox: SandboxOpt = None, zone: ZoneOpt = None) -> None:
    """Run a command inside a container (lxc backend; on Proxmox use `pct exec`); its output and exit code are the command's."""
    manager = containers_for(sandbox, zone=zone, ref=ref)
    if not hasattr(manager.backend, "exec"):
        raise BackendError(f"the {manager.backend.name} backend cannot exec: use `pct exec {ref} -- ...` on the node")
    result = manager.backend.exec(manager.resolve(ref), command, timeout=60)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    raise typer.Exit(result.returncode)


@app.command()
@friendly
@changes_host("gc")
def gc(sandbox: SandboxOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False, zone: ZoneOpt = None,
       rebuild: Annotated[bool, typer.Option(
           "--rebuild", help="Rebuild a lost or damaged reservations file from dnsmasq's hosts files and the "
                             "containers (their MACs and configs).")] = False) -> None:
    """Repair orphans: free reservations no container holds, link or adopt containers, remove half-built ones
    (in every zone, or --zone's; --rebuild: in --zone, default prox-net)."""
    from proximity.containers import zoned
    from proximity.containers.recovery import RepairFailure

    manager = containers_for(sandbox, recover=False, zone=zone)
    if rebuild:
        result = manager.rebuild_reservations(dry_run=dry_run)
        if as_json:
            print_json({"dry_run": dry_run, **result.as_dict()})
            return
        verb = "would reserve" if dry_run else "reserved"
        for r in result.reservations:
            out.print(f"[cyan]{verb}:[/] {r.hostname} {r.ip} {r.mac}" + (f" (CT {r.vmid})" if r.vmid else ""),
                      highlight=False)
        for note in result.notes:
            out.print(f"  note: {as_text(note)}", highlight=False)
        out.print(f"Dry run: nothing was changed; {len(result.reservations)} reservation(s) would be written to "
                  f"{manager.settings.reservations_db}." if dry_run else
                  f"{len(result.reservations)} reservation(s) written to {manager.settings.reservations_db}.",
                  highlight=False)
        return
    done = []
    for each in zoned.managers(manager.network, manager.backend, zone):
        done += [repair.describe() for repair in each.plan_repairs()] if dry_run else each.collect_garbage()
    actions = [a for a in done if not isinstance(a, RepairFailure)]
    failures = [a for a in done if isinstance(a, RepairFailure)]
    if as_json:
        print_json({"dry_run": dry_run, "actions": actions, "failures": failures})
    else:
        for action in actions:
            out.print(f"[cyan]would:[/] {as_text(action)}" if dry_run else f"[green]✓[/] {as_text(action)}", highlight=False)
        for failure in failures:
            err.print(f"[red]✗ failed:[/] {as_text(failure)}", highlight=False)
        if not done:
            out.print("Nothing to do: no orphans.")
        elif dry_run:
            out.print("Dry run: nothing was changed.")
    if failures:
        raise typer.Exit(1)


@app.command()
@friendly
@changes_host("migrate")
def migrate(ref: RefArg, sandbox: SandboxOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False,
            zone: ZoneOpt = None, timeout: Annotated[float, typer.Option(help="Seconds to wait for a lease and the DNS name.")] = 60,
            api: ApiOpt = None, token: TokenOpt = None, api_ca: ApiCaOpt = None,
            insecure_http: InsecureHttpOpt = False) -> None:
    """Move a container from vmbr0 to the managed bridge (--zone's: default prox-net): snapshot, shut down, switch
    net0, start, verify; roll back on failure."""
    no_zone_with_api(api, zone)
    if api:
        vmid = int(ref) if ref.isascii() and ref.isdigit() else remote_call(
            api, token, sandbox, "GET", f"/api/v1/containers/{quote(ref, safe='')}", api_ca, insecure_http)["vmid"]
        result = remote(api, token, sandbox, "POST", f"/api/v1/containers/{vmid}/migrate",
                        {"dry_run": dry_run, "timeout": timeout}, api_ca, insecure_http)
        print_json(result) if as_json else out.print(f"[green]✓[/] CT {vmid} migrated: {result.get('dns_name')}")
        return
    manager = containers_for(sandbox, recover=not dry_run, zone=zone)
    vmid = manager.resolve(ref)
    report = manager.migrate(vmid, dry_run=dry_run, timeout=timeout,
                             progress=(lambda step: None) if as_json else
                             (lambda step: out.print(f"[cyan]would:[/] {as_text(step)}" if dry_run else f"[green]✓[/] {as_text(step)}")))
    if as_json:
        print_json(report.as_dict())
    elif dry_run:
        out.print("Dry run: nothing was changed. The steps above are what `migrate` would do.")
    else:
        out.print(f"CT {vmid} is on {manager.settings.bridge} as {report.dns_name} ({report.ip}); "
                  f"snapshot {report.snapshot} is kept for a manual rollback.")


@ct_app.command("move")
@friendly
@changes_host("ct move")
def ct_move(ref: RefArg, zone: Annotated[str, typer.Option("--zone", help="The zone to move it to.")],
            sandbox: SandboxOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False,
            source: Annotated[str | None, typer.Option(
                "--from", help="The zone it is in (needed only when two zones hold a container of that name).")] = None,
            timeout: Annotated[float, typer.Option(help="Seconds to wait for its new lease.")] = 30) -> None:
    """Move a container to another zone: same MAC, a reservation and name in the new zone, the old one released;
    a running container is restarted so it takes its new lease at once. Undone on failure."""
    from proximity.containers import zoned

    manager = containers_for(sandbox, recover=not dry_run, zone=source, ref=ref)
    target = zoned.managers(manager.network, manager.backend, zone)[0]
    report = manager.move(ref, target, dry_run=dry_run, timeout=timeout,
                          progress=(lambda step: None) if as_json else
                          (lambda step: out.print(f"[cyan]would:[/] {as_text(step)}" if dry_run else
                                                  f"[green]✓[/] {as_text(step)}", highlight=False)))
    if as_json:
        print_json(report.as_dict())
    elif dry_run:
        out.print("Dry run: nothing was changed. The steps above are what `ct move` would do.")
    else:
        out.print(f"CT {report.vmid} is in zone {report.zone} as {report.dns_name} ({report.ip}), MAC {report.mac}.",
                  highlight=False)
