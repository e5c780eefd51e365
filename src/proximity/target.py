"""Which host a command may change: a Proxmox VE host, a sandbox, or a machine named in the settings.

A tester who forgets ``--sandbox`` once must not reconfigure their own machine. So every command
that changes the host (its dry run too: a plan for the wrong host misleads as much) first checks
that the host is a target: Proxmox VE (``/etc/pve`` exists), a sandbox (``--sandbox NAME``), or a
machine whose hostname the settings name (``target_host = "NAME"`` in proximity.toml, or
``PROXIMITY_TARGET_HOST``). The CLI's :func:`proximity.cli.common.changes_host` calls this.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from proximity.errors import InputError


def pve_dir() -> Path:
    """Proxmox VE's cluster file system; ``PROXIMITY_PVE_DIR`` points elsewhere (for tests)."""
    return Path(os.environ.get("PROXIMITY_PVE_DIR", "/etc/pve"))


class WrongHost(InputError):
    """The command would change a host that is not a target: nothing was changed or planned."""


def check_target(sandbox: str | None, command: str) -> None:
    """Refuse ``command`` unless this host is a target (see the module); changes nothing."""
    if sandbox or pve_dir().is_dir():
        return
    from proximity.settings import config_file, load_settings

    hostname = socket.gethostname()
    named = load_settings().target_host
    names = {hostname.lower(), hostname.split(".")[0].lower()}
    if named is not None and named.lower() in names:
        return
    why = (f"the settings name {named!r} as the target host, and this machine is {hostname!r}" if named else
           f"this machine ({hostname}) is not a Proxmox VE host ({pve_dir()} does not exist), and no sandbox or "
           "target host is named")
    raise WrongHost(
        f"refusing `proximity {command}`: {why}. Nothing was changed or planned. To act on a sandbox host, add "
        f"--sandbox NAME (`proximity sandbox create NAME` makes one). To manage this machine's own network, name "
        f"it in {config_file()}: target_host = \"{hostname}\" (or set PROXIMITY_TARGET_HOST={hostname}).")
