"""The `proximity` command: Rich tables for people, --json for scripts."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import TYPE_CHECKING, Annotated, Any

import typer

from proximity import sandbox as sandboxes
from proximity.containers.base import BackendError
from proximity.errors import NotFoundError, ProximityError, exit_code
from proximity.host import CommandError
from proximity.network.reconciler import NetworkManager, Report
from proximity.settings import Settings, SettingsError, check_hostname, load_settings

if TYPE_CHECKING:
    from proximity.containers.manager import ContainerInfo, ContainerManager

app = typer.Typer(help="Proximity: a managed, isolated network for the containers of a Proxmox host.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
sandbox_app = typer.Typer(help="The sandbox host: a Proxmox-like host made of network namespaces.",
                          no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")
ct_app = typer.Typer(help="Application containers on the managed network.", no_args_is_help=True)
app.add_typer(ct_app, name="ct")
token_app = typer.Typer(help="The API's bearer token.", no_args_is_help=True)
app.add_typer(token_app, name="token")

# Piped or logged output is not cut at 80 columns.
class _Console:
    """A Rich console made on first use: `up --json` and other script paths never import Rich."""

    def __init__(self, **options: Any):
        self._options, self._console = options, None

    @property
    def real(self) -> Any:
        """The Rich console itself (for Rich APIs that take one)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def Table(*args: Any, **kwargs: Any):  # noqa: N802 (Rich's name, imported when a table is shown)
    from rich.table import Table as RichTable

    return RichTable(*args, **kwargs)


out = _Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = _Console(stderr=True, soft_wrap=True)

SandboxOpt = Annotated[str | None, typer.Option("--sandbox", envvar="PROXIMITY_SANDBOX",
                                                help="Act on this sandbox host instead of the machine.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Change nothing; show the diff of every file and every command.")]
InterfacesOpt = Annotated[str | None, typer.Option("--interfaces-file", help="The interfaces file to manage.")]
UplinkOpt = Annotated[str | None, typer.Option("--uplink", help="Interface to masquerade out of (default: the default route's).")]

ApiOpt = Annotated[str | None, typer.Option(
    "--api", envvar="PROXIMITY_API_URL",
    help="Ask a running `proximity serve` at this URL (https://HOST:8080, or http://127.0.0.1:8080) and follow its job.")]
TokenOpt = Annotated[str | None, typer.Option(
    "--token", envvar="PROXIMITY_API_TOKEN", help="The service's token (default: `proximity token show`).")]
ApiCaOpt = Annotated[str | None, typer.Option(
    "--api-ca", envvar="PROXIMITY_API_CA",
    help="Trust this certificate (PEM) for --api https://... (default: the service's own, when on this machine).")]
InsecureHttpOpt = Annotated[bool, typer.Option(
    "--insecure-http", help="Allow --api http:// to a non-loopback address: the token then crosses the network in clear text.")]

def friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every error Proximity raises into one clear message and its exit code, never a traceback.

    2: the input was refused (invalid, not found, conflict); 1: an operation failed (see errors.py).
    """

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ProximityError, PermissionError) as exc:
            err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
            raise typer.Exit(exit_code(exc)) from None

    return wrapper


def settings_for(sandbox: str | None, **overrides: Any) -> Settings:
    """Settings for the machine, or for a sandbox host; flags given on the command line win."""
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if not sandbox:
        return load_settings(**overrides)
    return sandboxes.load(sandbox).settings(**overrides)


def manager_for(sandbox: str | None, dry_run: bool = False, **overrides: Any) -> NetworkManager:
    return NetworkManager(settings_for(sandbox, **overrides), dry_run=dry_run)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def show_report(report: Report, as_json: bool, verb: str) -> None:
    if as_json:
        print_json(report.as_dict())
        return
    if report.dry_run:
        import difflib  # only dry runs show diffs

        out.print(f"[bold]Dry run of `proximity {verb}`: nothing was changed.[/] The plan:")
        for action in report.actions:
            out.print(f"  [cyan]•[/] {action}", highlight=False)
        for change in report.files:
            diff = difflib.unified_diff(
                change["before"].splitlines(keepends=True), change["after"].splitlines(keepends=True),
                fromfile=f"{change['path']} (now)", tofile=f"{change['path']} (after {verb})",
            )
            out.print("".join(diff), markup=False, highlight=False, end="")
        for argv in report.commands:
            out.print(f"[cyan]would run:[/] {shlex.join(argv)}", highlight=False)
        if not report.files and not report.commands:
            out.print("Nothing to do: the host already matches the settings.")
    elif report.changed:
        for action in report.actions:
            out.print(f"[green]✓[/] {action}", highlight=False)
    else:
        out.print("Nothing to do: the host already matches the settings.")
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)


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
        expires = "never" if lease.expiry == 0 else datetime.fromtimestamp(lease.expiry).strftime("%Y-%m-%d %H:%M")
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


@sandbox_app.command("create")
@friendly
def sandbox_create(name: str) -> None:
    """Create a sandbox host NAME (namespaces NAME and NAME-lan, vmbr0, an upstream DNS)."""
    sb = sandboxes.create(name)
    out.print(f"[green]✓[/] sandbox {sb.name} ready: files in {sb.root}; try `proximity up --sandbox {sb.name}`")


@sandbox_app.command("destroy")
@friendly
def sandbox_destroy(name: str) -> None:
    """Destroy a sandbox host and everything in it (processes, namespaces, files)."""
    sandboxes.destroy(name)
    out.print(f"[green]✓[/] sandbox {name} destroyed")


@sandbox_app.command("apply")
@friendly
def sandbox_apply(name: str) -> None:
    """Do what Proxmox's "Apply Configuration" does: move interfaces.new over interfaces, then `ifreload -a`."""
    sandboxes.apply_pending(sandboxes.load(name))
    out.print(f"[green]✓[/] applied the pending network changes of sandbox {name}")


@sandbox_app.command("attach")
@friendly
def sandbox_attach(name: str, hostname: str) -> None:
    """Attach a client namespace to the sandbox's bridge and take a DHCP lease as HOSTNAME."""
    client = sandboxes.attach_client(sandboxes.load(name), hostname)
    out.print(f"[green]✓[/] {client.hostname} leased {client.ip} (namespace {client.ns})")


@sandbox_app.command("exec")
@friendly
def sandbox_exec(name: str, hostname: str, command: Annotated[list[str], typer.Argument()]) -> None:
    """Run a command inside the client namespace of HOSTNAME."""
    sb = sandboxes.load(name)
    client = next((c for c in sandboxes.clients(sb) if c.hostname == hostname), None)
    if client is None:
        raise NotFoundError(f"sandbox {sb.name} has no client {hostname!r}: attach it first with "
                            f"`proximity sandbox attach {sb.name} {hostname}`")
    result = sandboxes.ns_run(client.ns, command, check=False)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    raise typer.Exit(result.returncode)


def containers_for(sandbox: str | None, recover: bool = True, **overrides: Any) -> ContainerManager:
    """The container manager; with ``recover``, first finish or undo what an interrupted command left."""
    from proximity.containers.factory import backend_for  # imports proxmoxer only when needed
    from proximity.containers.manager import ContainerManager

    network = manager_for(sandbox, **overrides)
    manager = ContainerManager(network, backend_for(network.settings))
    if recover:
        for line in manager.recover():
            err.print(f"[yellow]recovered an interrupted command:[/] {line}", highlight=False)
    return manager


def show_containers(found: list[ContainerInfo], as_json: bool) -> None:
    if as_json:
        print_json([c.as_dict() for c in found])
        return
    table = Table(title="containers")
    for column in ("id", "hostname", "state", "MAC", "IP", "DNS name", "bridge", "backend"):
        table.add_column(column, no_wrap=True)
    for c in found:
        state = f"[green]{c.state}[/]" if c.state == "running" else c.state
        table.add_row(str(c.vmid), c.hostname, state, c.mac or "-", c.ip or "-", c.dns_name or "-", c.bridge or "-",
                      c.backend)
    out.print(table)


@ct_app.command("create")
@friendly
def ct_create(hostname: str, sandbox: SandboxOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False,
              template: Annotated[str | None, typer.Option(help="Proxmox template volume id.")] = None,
              memory: Annotated[int, typer.Option(min=16, help="Memory in MiB.")] = 256,
              cores: Annotated[int, typer.Option(min=1, max=8192, help="CPU cores.")] = 1,
              start: Annotated[bool, typer.Option("--start/--no-start", help="Start it once created.")] = True,
              api: ApiOpt = None, token: TokenOpt = None, api_ca: ApiCaOpt = None,
              insecure_http: InsecureHttpOpt = False) -> None:
    """Create a container on the managed bridge with a fixed MAC, a reserved address and a DNS name."""
    check_hostname(hostname)
    if api and not dry_run:
        body = {"hostname": hostname, "memory": memory, "cores": cores, "template": template, "start": start}
        result = remote(api, token, sandbox, "POST", "/api/v1/containers", body, api_ca, insecure_http)
        if as_json:
            print_json(result)
        else:
            out.print(f"[green]✓[/] CT {result['vmid']} {hostname}: {result['ip']} ({result['dns_name']})")
        return
    manager = containers_for(sandbox, recover=not dry_run)
    if dry_run:
        reservation, net0 = manager.plan_create(hostname)
        plan = {"hostname": hostname, "ip": reservation.ip, "mac": reservation.mac, "net0": net0,
                "dns_name": f"{hostname}.{manager.settings.domain}", "backend": manager.backend.name}
        if as_json:
            print_json(plan)
        else:
            out.print(f"Dry run: would reserve {reservation.ip} / {reservation.mac} for {hostname}, create it on "
                      f"{manager.backend.name} with net0 {net0}" + (" and start it." if start else "."))
        return
    info = manager.create(hostname, memory=memory, cores=cores, template=template, start=start)
    if as_json:
        print_json(info.as_dict())
    else:
        out.print(f"[green]✓[/] CT {info.vmid} {info.hostname}: {info.ip} ({info.dns_name}), MAC {info.mac}, {info.state}")


@ct_app.command("list")
@friendly
def ct_list(sandbox: SandboxOpt = None, as_json: JsonOpt = False) -> None:
    """List containers with their state, MAC, address and DNS name."""
    show_containers(containers_for(sandbox).list(), as_json)


def _ct_action(verb: str, ref: str, sandbox: str | None, dry_run: bool) -> None:
    manager = containers_for(sandbox, recover=not dry_run)
    if verb == "destroy":
        plan = manager.plan_destroy(ref)
        if not dry_run:
            manager.destroy(ref)
        out.print(f"Dry run: would {plan}." if dry_run else f"[green]✓[/] done: {plan}", highlight=False)
        return
    vmid = manager.resolve(ref)
    if dry_run:
        out.print(f"Dry run: would {verb} CT {vmid} ({manager.info(vmid).hostname}).")
        return
    info = getattr(manager, verb)(str(vmid))
    out.print(f"[green]✓[/] CT {info.vmid} {info.hostname}: {info.state}" + (f" ({info.note})" if info.note else ""))


@ct_app.command("start")
@friendly
def ct_start(ref: str, sandbox: SandboxOpt = None, dry_run: DryRunOpt = False) -> None:
    """Start a container (by id or hostname)."""
    _ct_action("start", ref, sandbox, dry_run)


@ct_app.command("stop")
@friendly
def ct_stop(ref: str, sandbox: SandboxOpt = None, dry_run: DryRunOpt = False) -> None:
    """Shut a container down cleanly (by id or hostname)."""
    _ct_action("stop", ref, sandbox, dry_run)


@ct_app.command("destroy")
@friendly
def ct_destroy(ref: str, sandbox: SandboxOpt = None, dry_run: DryRunOpt = False) -> None:
    """Destroy a container and release its reservation and lease."""
    _ct_action("destroy", ref, sandbox, dry_run)


@ct_app.command("exec")
@friendly
def ct_exec(ref: str, command: Annotated[list[str], typer.Argument()], sandbox: SandboxOpt = None) -> None:
    """Run a command inside a container (lxc backend; on Proxmox use `pct exec`)."""
    manager = containers_for(sandbox)
    if not hasattr(manager.backend, "exec"):
        raise BackendError(f"the {manager.backend.name} backend cannot exec: use `pct exec {ref} -- ...` on the node")
    result = manager.backend.exec(manager.resolve(ref), command, timeout=60)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    raise typer.Exit(result.returncode)


@app.command()
@friendly
def gc(sandbox: SandboxOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Repair orphans: free reservations no container holds, link or adopt containers, remove half-built ones."""
    manager = containers_for(sandbox, recover=False)
    actions = [repair.describe() for repair in manager.plan_repairs()] if dry_run else manager.collect_garbage()
    if as_json:
        print_json({"dry_run": dry_run, "actions": actions})
        return
    for action in actions:
        out.print(f"[cyan]would:[/] {action}" if dry_run else f"[green]✓[/] {action}", highlight=False)
    if not actions:
        out.print("Nothing to do: no orphans.")
    elif dry_run:
        out.print("Dry run: nothing was changed.")
    if not dry_run and any(action.startswith("could not ") for action in actions):
        raise typer.Exit(1)


@app.command()
@friendly
def migrate(vmid: int, sandbox: SandboxOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False,
            timeout: Annotated[float, typer.Option(help="Seconds to wait for a lease and the DNS name.")] = 60,
            api: ApiOpt = None, token: TokenOpt = None, api_ca: ApiCaOpt = None,
            insecure_http: InsecureHttpOpt = False) -> None:
    """Move a container from vmbr0 to the managed bridge: snapshot, shut down, switch net0, start, verify; roll back on failure."""
    if api:
        result = remote(api, token, sandbox, "POST", f"/api/v1/containers/{vmid}/migrate",
                        {"dry_run": dry_run, "timeout": timeout}, api_ca, insecure_http)
        print_json(result) if as_json else out.print(f"[green]✓[/] CT {vmid} migrated: {result.get('dns_name')}")
        return
    manager = containers_for(sandbox, recover=not dry_run)
    report = manager.migrate(vmid, dry_run=dry_run, timeout=timeout,
                             progress=(lambda step: None) if as_json else
                             (lambda step: out.print(f"[cyan]would:[/] {step}" if dry_run else f"[green]✓[/] {step}")))
    if as_json:
        print_json(report.as_dict())
    elif dry_run:
        out.print("Dry run: nothing was changed. The steps above are what `migrate` would do.")
    else:
        out.print(f"CT {vmid} is on {manager.settings.bridge} as {report.dns_name} ({report.ip}); "
                  f"snapshot {report.snapshot} is kept for a manual rollback.")


@app.command()
@friendly
def serve(sandbox: SandboxOpt = None,
          host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for the LAN: then HTTPS).")] = "127.0.0.1",
          port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
          cert: Annotated[str | None, typer.Option(
              "--cert", help="TLS certificate (PEM) to serve (default: api_cert_file, or a self-signed one made "
                             "on first start next to the token).")] = None,
          key: Annotated[str | None, typer.Option("--key", help="The certificate's private key (PEM).")] = None,
          insecure_http: Annotated[bool, typer.Option(
              "--insecure-http", help="Serve plain HTTP on a non-loopback address (the token crosses the network "
                                      "in clear text).")] = False,
          pid_file: Annotated[str | None, typer.Option(help="Write the service's pid here.")] = None,
          install_unit: Annotated[bool, typer.Option(
              "--install-unit", help="Install and start the proximity-api systemd unit instead.")] = False,
          dry_run: DryRunOpt = False) -> None:
    """Run the HTTP API and dashboard: converge the network first, then serve (retrying the converge if it fails).

    On any address other than loopback it serves HTTPS only, so the token never crosses the network in clear text.
    """
    import os

    from proximity.api import tls

    settings = settings_for(sandbox, api_cert_file=cert, api_key_file=key)
    if (cert is None) != (key is None) or (settings.api_cert_file is None) != (settings.api_key_file is None):
        raise SettingsError("give both a certificate and its key (--cert and --key, or api_cert_file and "
                            "api_key_file), or neither for a self-signed certificate")
    if install_unit:
        _install_api_unit(settings, host, port, dry_run)
        return
    use_tls = not tls.is_loopback(host) or settings.api_cert_file is not None
    if use_tls and insecure_http and settings.api_cert_file is None:
        use_tls = False
        err.print(f"[yellow]warning:[/] --insecure-http: serving plain HTTP on {host}; the API token crosses the "
                  "network in clear text and anyone on it can read it and use the API", highlight=False)
    ssl_files: dict[str, str] = {}
    if use_tls:
        if settings.api_cert_file is None and tls.ensure_self_signed(settings.api_tls_cert, settings.api_tls_key, host):
            err.print(f"made a self-signed certificate {settings.api_tls_cert} (SHA-256 "
                      f"{tls.fingerprint(settings.api_tls_cert)})", highlight=False)
        cert_file, key_file = tls.server_files(settings.api_tls_cert, settings.api_tls_key)
        ssl_files = {"ssl_certfile": cert_file, "ssl_keyfile": key_file}

    import uvicorn

    from proximity.api.app import Context, create_app

    context = Context(settings)
    if pid_file:
        with open(pid_file, "w") as fh:
            fh.write(f"{os.getpid()}\n")
    scheme = "https" if use_tls else "http"
    err.print(f"Proximity API on {scheme}://{host}:{port}/ (token: `proximity token show"
              + (f" --sandbox {sandbox}" if sandbox else "") + "`)", highlight=False)
    # No access log (one line per request is most of a cheap request's cost) and no proxy
    # headers: the service is reached directly, never through a reverse proxy it should trust.
    uvicorn.run(create_app(context), host=host, port=port, log_level="warning", access_log=False,
                proxy_headers=False, **ssl_files)


@token_app.command("show")
@friendly
def token_show(sandbox: SandboxOpt = None, as_json: JsonOpt = False) -> None:
    """Print the API token (created if there is none yet); --json adds the TLS certificate's fingerprint."""
    from proximity.api.auth import TokenStore

    settings = settings_for(sandbox)
    token = TokenStore(settings).ensure()
    if not as_json:
        sys.stdout.write(token + "\n")  # only the token, so that $(proximity token show) works
        return
    from proximity.api.tls import fingerprint

    cert = settings.api_tls_cert
    print_json({"token": token, "certificate": str(cert) if cert.exists() else None,
                "sha256": fingerprint(cert) if cert.exists() else None})


@token_app.command("rotate")
@friendly
def token_rotate(sandbox: SandboxOpt = None, dry_run: DryRunOpt = False) -> None:
    """Replace the API token; the old one stops working at once."""
    from proximity.api.auth import TokenStore

    store = TokenStore(settings_for(sandbox))
    if dry_run:
        out.print(f"Dry run: would write a new token to {store.path} (mode 0600).")
        return
    sys.stdout.write(store.rotate() + "\n")


def _install_api_unit(settings: Settings, host: str, port: int, dry_run: bool) -> None:
    import shutil

    from proximity.host import DryRunHost, Host
    from proximity.network import render

    target = DryRunHost() if dry_run else Host()
    if not target.has_systemd:
        raise SettingsError("--install-unit needs systemd as PID 1 (a Proxmox host); run `proximity serve` directly")
    exe = shutil.which("proximity") or sys.argv[0]
    path = settings.systemd_dir / "proximity-api.service"
    target.write_text(path, render.api_unit(settings, exe, host, port))
    for argv in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "proximity-api.service"]):
        target.run(argv)
    if dry_run:
        show_report(Report(dry_run=True, files=target.files, commands=target.commands), False, "serve --install-unit")
    else:
        out.print(f"[green]✓[/] {path} installed and started; the token: `proximity token show`")


def remote(api: str, token: str | None, sandbox: str | None, method: str, path: str, body: dict,
           api_ca: str | None = None, insecure_http: bool = False) -> Any:
    from pathlib import Path

    from proximity.api.auth import TokenStore
    from proximity.api.tls import client_verify
    from proximity.remote import check_url, run_job

    warning = check_url(api, insecure_http)
    if warning:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    settings = settings_for(sandbox)
    token = token or TokenStore(settings).read()
    if not token:
        raise SettingsError("no API token: pass --token or set PROXIMITY_API_TOKEN (see `proximity token show`)")
    verify = client_verify(Path(api_ca) if api_ca else None,
                           settings.api_tls_cert if settings.api_cert_file is None else None)
    return run_job(api, token, method, path, body, err.real, verify)
