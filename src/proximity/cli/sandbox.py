"""`proximity sandbox ...`: the sandbox host made of network namespaces."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from proximity import sandbox as sandboxes
from proximity.cli.common import friendly, out, sandbox_app
from proximity.errors import NotFoundError

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
