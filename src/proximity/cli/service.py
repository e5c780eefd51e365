"""The service's commands: serve and `token ...`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from proximity.cli.common import (DryRunOpt, JsonOpt, SandboxOpt, app, changes_host, err, friendly, out, print_json,
                                  settings_for, show_report, token_app)
from proximity.errors import ConflictError, NotFoundError
from proximity.network.reconciler import Report
from proximity.settings import Settings, SettingsError

@app.command()
@friendly
@changes_host("serve")
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
          max_connections: Annotated[int, typer.Option(
              min=1, max=65536, help="Client connections served at once (job streams included); more are closed "
                                     "at once. Lowered to leave 256 descriptors free for the service's own work.")] = 512,
          head_timeout: Annotated[float, typer.Option(
              min=0.1, max=600, help="Seconds a client has for the TLS handshake and for each request's line and "
                                     "headers; a slower client is disconnected.")] = 10.0,
          install_unit: Annotated[bool, typer.Option(
              "--install-unit", help="Install and start the proximity-api systemd unit instead.")] = False,
          dry_run: DryRunOpt = False) -> None:
    """Run the HTTP API and dashboard; heal the network while `up` is the last word, leave it alone after `down`.

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
    ssl_files: dict[str, str] = {}  # cert_file, key_file
    if use_tls:
        if settings.api_cert_file is None and tls.ensure_self_signed(settings.api_tls_cert, settings.api_tls_key, host):
            err.print(f"made a self-signed certificate {settings.api_tls_cert} (SHA-256 "
                      f"{tls.fingerprint(settings.api_tls_cert)})", highlight=False)
        cert_file, key_file = tls.server_files(settings.api_tls_cert, settings.api_tls_key)
        ssl_files = {"cert_file": cert_file, "key_file": key_file}

    from proximity.api import server
    from proximity.api.app import Context, create_app

    context = Context(settings, reconcile_every=settings.heal_interval)
    if pid_file:
        with open(pid_file, "w") as fh:
            fh.write(f"{os.getpid()}\n")
    scheme = "https" if use_tls else "http"
    err.print(f"Proximity API on {scheme}://{host}:{port}/ (token: `proximity token show"
              + (f" --sandbox {sandbox}" if sandbox else "") + "`)", highlight=False)
    limits = server.Limits(max_connections, head_timeout).fitted()
    context.jobs.max_streams = min(context.jobs.max_streams, limits.max_connections // 2)  # room for the rest
    server.run(create_app(context), host, port, limits, **ssl_files)


@token_app.command("show")
@friendly
def token_show(sandbox: SandboxOpt = None, as_json: JsonOpt = False) -> None:
    """Print the API token (it changes nothing: `token create` makes one); --json adds the TLS certificate's fingerprint."""
    from proximity.tokens import TokenStore

    settings = settings_for(sandbox)
    store = TokenStore(settings)
    token = store.read()
    if token is None:
        raise NotFoundError(f"there is no API token yet ({store.path} does not exist)",
                            fix="make one with `proximity token create" + (f" --sandbox {sandbox}" if sandbox else "")
                                + "` (or start `proximity serve`, which does)")
    if not as_json:
        sys.stdout.write(token + "\n")  # only the token, so that $(proximity token show) works
        return
    from proximity.api.tls import fingerprint

    cert = settings.api_tls_cert
    print_json({"token": token, "certificate": str(cert) if cert.exists() else None,
                "sha256": fingerprint(cert) if cert.exists() else None})


@token_app.command("create")
@friendly
def token_create(sandbox: SandboxOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Make the API token if there is none (0600); an existing one is kept. Prints where it is, never the token."""
    from proximity.tokens import TokenStore

    store = TokenStore(settings_for(sandbox))
    existed = store.read() is not None
    if not existed and not dry_run:
        store.ensure()
    if as_json:
        print_json({"path": str(store.path), "created": not existed and not dry_run, "dry_run": dry_run,
                    "existed": existed})
    elif existed:
        out.print(f"the API token exists already: {store.path} (kept; `proximity token rotate` replaces it)",
                  highlight=False)
    else:
        out.print(f"Dry run: would write a new token to {store.path} (mode 0600)." if dry_run
                  else f"[green]✓[/] made the API token {store.path} (mode 0600): `proximity token show`",
                  highlight=False)


@token_app.command("rotate")
@friendly
@changes_host("token rotate")
def token_rotate(sandbox: SandboxOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Replace the API token; the old one stops working at once."""
    from proximity.tokens import TokenStore

    store = TokenStore(settings_for(sandbox))
    if dry_run:
        if as_json:
            print_json({"dry_run": True, "path": str(store.path)})
        else:
            out.print(f"Dry run: would write a new token to {store.path} (mode 0600).")
        return
    token = store.rotate()
    print_json({"token": token, "path": str(store.path)}) if as_json else sys.stdout.write(token + "\n")


# Where the Debian package puts the unit (Debian 12, and 13 after the /usr merge).
PACKAGED_UNITS = (Path("/lib/systemd/system/proximity-api.service"), Path("/usr/lib/systemd/system/proximity-api.service"))


def _install_api_unit(settings: Settings, host: str, port: int, dry_run: bool) -> None:
    import shutil

    from proximity.host import DryRunHost, Host
    from proximity.network import render

    target = DryRunHost() if dry_run else Host()
    if not target.has_systemd:
        raise SettingsError("--install-unit needs systemd as PID 1 (a Proxmox host); run `proximity serve` directly")
    packaged = next((unit for unit in PACKAGED_UNITS if unit.exists()), None)
    if packaged is not None:  # a unit in /etc/systemd/system would shadow the package's, and outlive it
        raise ConflictError(f"the Debian package installed {packaged}; --install-unit would shadow it",
                            fix="start it with `systemctl enable --now proximity-api`, and change it with "
                                "`systemctl edit proximity-api`")
    exe = shutil.which("proximity") or sys.argv[0]
    path = settings.systemd_dir / "proximity-api.service"
    target.write_text(path, render.api_unit(settings, exe, host, port))
    for argv in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "proximity-api.service"]):
        target.run(argv)
    if dry_run:
        show_report(Report(dry_run=True, files=target.files, commands=target.commands), False, "serve --install-unit")
    else:
        out.print(f"[green]✓[/] {path} installed and started; the token: `proximity token show`")
