"""`proximity sandbox ...`: the sandbox host made of network namespaces."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from proximity import sandbox as sandboxes
from proximity.cli.common import JsonOpt, Table, friendly, out, print_json, sandbox_app
from proximity.errors import NotFoundError

NameArg = Annotated[str, typer.Argument(help="The sandbox's name (a network namespace name, e.g. demo).",
                                        autocompletion=lambda incomplete: [
                                            n for n in sandboxes.names() if n.startswith(incomplete)])]
ClientArg = Annotated[str, typer.Argument(help="The client's hostname, as it asks DHCP for a lease.")]


def _done(as_json: bool, data: dict, text: str) -> None:
    print_json(data) if as_json else out.print(text)


@sandbox_app.command("create")
@friendly
def sandbox_create(name: NameArg, as_json: JsonOpt = False) -> None:
    """Create a sandbox host NAME (namespaces NAME and NAME-lan, vmbr0, an upstream DNS)."""
    sb = sandboxes.create(name)
    _done(as_json, {"name": sb.name, "root": str(sb.root), "created": True},
          f"[green]✓[/] sandbox {sb.name} ready: files in {sb.root}; try `proximity up --sandbox {sb.name}`")


@sandbox_app.command("list")
@friendly
def sandbox_list(as_json: JsonOpt = False) -> None:
    """List the sandbox hosts on this machine."""
    found = [{"name": name, "root": str(sandboxes.SANDBOX_ROOT / name)} for name in sandboxes.names()]
    if as_json:
        print_json(found)
        return
    table = Table(title="sandboxes")
    for column in ("name", "files"):
        table.add_column(column, no_wrap=True)
    for sb in found:
        table.add_row(sb["name"], sb["root"])
    out.print(table)


sandbox_app.command("ls", hidden=True)(sandbox_list)


@sandbox_app.command("destroy")
@friendly
def sandbox_destroy(name: NameArg, as_json: JsonOpt = False, if_exists: Annotated[bool, typer.Option(
        "--if-exists", help="Succeed (do nothing) if there is no such sandbox.")] = False) -> None:
    """Destroy a sandbox host and everything in it (processes, namespaces, files)."""
    existed = True
    try:
        sandboxes.destroy(name, missing_ok=False)
    except NotFoundError:
        if not if_exists:
            raise
        existed = False
    _done(as_json, {"name": name, "destroyed": existed},
          f"[green]✓[/] sandbox {name} destroyed" if existed else f"no sandbox {name}: nothing to do")


sandbox_app.command("rm", hidden=True)(sandbox_destroy)
sandbox_app.command("delete", hidden=True)(sandbox_destroy)


@sandbox_app.command("apply")
@friendly
def sandbox_apply(name: NameArg, as_json: JsonOpt = False) -> None:
    """Do what Proxmox's "Apply Configuration" does: move interfaces.new over interfaces, then `ifreload -a`."""
    sandboxes.apply_pending(sandboxes.load(name))
    _done(as_json, {"name": name, "applied": True}, f"[green]✓[/] applied the pending network changes of sandbox {name}")


@sandbox_app.command("attach")
@friendly
def sandbox_attach(name: NameArg, hostname: ClientArg, as_json: JsonOpt = False) -> None:
    """Attach a client namespace to the sandbox's bridge and take a DHCP lease as HOSTNAME."""
    client = sandboxes.attach_client(sandboxes.load(name), hostname)
    _done(as_json, {"hostname": client.hostname, "ip": client.ip, "namespace": client.ns},
          f"[green]✓[/] {client.hostname} leased {client.ip} (namespace {client.ns})")


@sandbox_app.command("exec")
@friendly
def sandbox_exec(name: NameArg, hostname: ClientArg, command: Annotated[list[str], typer.Argument(
        help="The command and its arguments (put `--` before it when it has options).")]) -> None:
    """Run a command inside the client namespace of HOSTNAME; its output and exit code are the command's."""
    sb = sandboxes.load(name)
    client = next((c for c in sandboxes.clients(sb) if c.hostname == hostname), None)
    if client is None:
        raise NotFoundError(f"sandbox {sb.name} has no client {hostname!r}",
                            fix=f"attach it first with `proximity sandbox attach {sb.name} {hostname}`")
    result = sandboxes.ns_run(client.ns, command, check=False)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    raise typer.Exit(result.returncode)
