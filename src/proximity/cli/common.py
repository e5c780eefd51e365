"""What every command group shares: the Typer apps, the consoles, the options, and the error handling."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any

import typer

from proximity import sandbox as sandboxes
from proximity.errors import HostError, NeedsRoot, ProximityError, error_code, exit_code
from proximity.network.reconciler import NetworkManager, Report
from proximity.settings import Settings, SettingsError, load_settings

EXIT_CODES = """Exit codes:
 0  done; `status`: healthy
 1  an operation failed, or it needs root; `status`: degraded or unhealthy
 2  input refused (invalid, not found, conflict): nothing was changed
 3  `status`: the network is down, as requested (`proximity down`)
Under --json an error is JSON on stdout, with a stable code:
{"error": {"code": "not_found", "exit": 2, "message": "...", "fix": "..."}}"""

app = typer.Typer(help="Proximity: a managed, isolated network for the containers of a Proxmox host.",
                  epilog=EXIT_CODES, no_args_is_help=True, pretty_exceptions_enable=False)


def _show_version(value: bool) -> None:
    if value:
        from proximity import version

        sys.stdout.write(f"proximity {version()}\n")
        raise typer.Exit()


@app.callback()
def main(show_version: Annotated[bool, typer.Option(
        "--version", "-V", callback=_show_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    """Proximity: a managed, isolated network for the containers of a Proxmox host."""


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


def as_text(value: str) -> str:
    """A message or value as plain text inside Rich markup: a path or name with [brackets] prints as given."""
    from rich.markup import escape

    return escape(value)


def Table(*args: Any, **kwargs: Any):  # noqa: N802 (Rich's name, imported when a table is shown)
    from rich.table import Table as RichTable

    return RichTable(*args, **kwargs)


out = _Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160, emoji=False)  # a MAC :cd: is no emoji
err = _Console(stderr=True, soft_wrap=True, emoji=False)

SandboxOpt = Annotated[str | None, typer.Option("--sandbox", envvar="PROXIMITY_SANDBOX",
                                                help="Act on this sandbox host instead of the machine.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Change nothing; show the diff of every file and every command.")]
InterfacesOpt = Annotated[str | None, typer.Option("--interfaces-file", help="The interfaces file to manage.")]
UplinkOpt = Annotated[str | None, typer.Option("--uplink", help="Interface to masquerade out of (default: the default route's).")]
ZoneOpt = Annotated[str | None, typer.Option(
    "--zone", help="The zone (default: prox-net; for a named container, the zone that holds it).")]

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
    Under --json (the command's ``as_json``) the error is JSON on stdout, with its stable code.
    """

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ProximityError, PermissionError) as exc:
            exc = _needs_root(exc) or exc
            if kwargs.get("as_json"):
                fix = getattr(exc, "fix", None)
                message = exc.message if isinstance(exc, ProximityError) else str(exc)
                print_json({"error": {"code": error_code(exc), "exit": exit_code(exc), "message": message,
                                      "fix": fix}})
            else:
                err.print(f"[bold red]error:[/] {as_text(str(exc))}", markup=True, highlight=False)
            raise typer.Exit(exit_code(exc)) from None

    return wrapper


def _needs_root(exc: BaseException) -> NeedsRoot | None:
    """A permission failure of a user who is not root, as what it is: the command needs root."""
    if os.geteuid() == 0 or isinstance(exc, NeedsRoot):
        return None
    cause = exc if isinstance(exc, PermissionError) else exc.__cause__ or exc.__context__
    denied = isinstance(cause, PermissionError) or (
        isinstance(exc, HostError) and ("Permission denied" in str(exc) or "Operation not permitted" in str(exc)))
    if not denied:
        return None
    argv = ["sudo", "proximity", *sys.argv[1:]]
    return NeedsRoot(f"this command needs root ({exc})", fix=f"run it as root: {shlex.join(argv)}")


def changes_host(command: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a command that changes the host (its --dry-run too): it runs only on a target host
    (Proxmox VE, a sandbox, or the settings' target_host; see proximity.target). ``--api`` asks a
    service instead, which was checked when it started."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not kwargs.get("api"):
                from proximity.target import check_target

                check_target(kwargs.get("sandbox"), command)
            return func(*args, **kwargs)

        return wrapper

    return decorate


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
            out.print(f"  [cyan]•[/] {as_text(action)}", highlight=False)
        for change in report.files:
            diff = difflib.unified_diff(
                change["before"].splitlines(keepends=True), change["after"].splitlines(keepends=True),
                fromfile=f"{change['path']} (now)", tofile=f"{change['path']} (after {verb})",
            )
            out.print("".join(diff), markup=False, highlight=False, end="")
        for argv in report.commands:
            out.print(f"[cyan]would run:[/] {as_text(shlex.join(argv))}", highlight=False)
        if not report.files and not report.commands:
            out.print("Nothing to do: the host already matches the settings.")
    elif report.changed:
        for action in report.actions:
            out.print(f"[green]✓[/] {as_text(action)}", highlight=False)
    else:
        out.print("Nothing to do: the host already matches the settings.")
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {as_text(warning)}", highlight=False)


def remote(api: str, token: str | None, sandbox: str | None, method: str, path: str, body: dict,
           api_ca: str | None = None, insecure_http: bool = False) -> Any:
    from proximity.remote import run_job

    token, verify = _connection(api, token, sandbox, api_ca, insecure_http)
    return run_job(api, token, method, path, body, err.real, verify)


def remote_call(api: str, token: str | None, sandbox: str | None, method: str, path: str,
                api_ca: str | None = None, insecure_http: bool = False, whole: bool = False) -> Any:
    """A request to the service that is not a job (a read, start, stop, destroy): its answer's ``data``."""
    from proximity.remote import call

    token, verify = _connection(api, token, sandbox, api_ca, insecure_http)
    return call(api, token, method, path, verify, whole)


def _connection(api: str, token: str | None, sandbox: str | None, api_ca: str | None,
                insecure_http: bool) -> tuple[str, Any]:
    """The token and the TLS trust for --api (the URL checked first)."""
    from pathlib import Path

    from proximity.api.tls import client_verify
    from proximity.remote import check_url
    from proximity.tokens import TokenStore

    warning = check_url(api, insecure_http)
    if warning:
        err.print(f"[yellow]warning:[/] {as_text(warning)}", highlight=False)
    settings = settings_for(sandbox)
    token = token or TokenStore(settings).read()
    if not token:
        raise SettingsError("no API token", fix="pass --token or set PROXIMITY_API_TOKEN (see `proximity token show`)")
    verify = client_verify(Path(api_ca) if api_ca else None,
                           settings.api_tls_cert if settings.api_cert_file is None else None)
    return token, verify


class Fetched:
    """What the service answered, read like the local objects the commands render (``st.bridge_up``)."""

    def __init__(self, data: dict[str, Any]):
        self._data = data

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(name) from None

    def as_dict(self) -> dict[str, Any]:
        return self._data


def hostnames(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of container names: the reserved hostnames, from the reservations file (no backend call)."""
    try:
        settings = settings_for(ctx.params.get("sandbox"))
        items = json.loads(settings.reservations_db.read_text())
        return sorted(item["hostname"] for item in items if item.get("hostname", "").startswith(incomplete))
    except Exception:  # completion never fails the shell: no settings, no file, no permission
        return []
