"""What failed, as a type: every error Proximity raises for a user is one of these.

Each class says *what kind* of failure it is, and that decides the CLI exit code and the
HTTP status in one place (:func:`exit_code`, :func:`http_status`):

=====================  ==========  ===========  ==================
class                  exit code   HTTP status  code (``--json``)
=====================  ==========  ===========  ==================
``InputError``         2           400          ``invalid_input``
``NotFoundError``      2           404          ``not_found``
``ConflictError``      2           409          ``conflict``
``HostError``          1           500          ``host_error``
``NeedsRoot``          1           500          ``needs_root``
``ProxmoxError``       1           502          ``proxmox_error``
=====================  ==========  ===========  ==================

Exit code 2 means the command's input was refused (invalid, not found, or in conflict with
what exists) and nothing changed; 1 means an operation failed on the host or in Proxmox.
The ``code`` is stable (scripts match on it); a subclass keeps its parent's unless it names a
narrower kind. ``fix``, when given apart from the message, is what to do about it; ``str()`` is
always the whole sentence (message and fix), as the API's ``detail`` and the CLI show it.
"""

from __future__ import annotations


class ProximityError(Exception):
    """Base class: the message is complete (what failed, and the fix) and shown as is."""

    exit_code = 1
    http_status = 500
    code = "error"

    def __init__(self, *args: object, fix: str | None = None):
        super().__init__(*args)
        self.fix = fix

    @property
    def message(self) -> str:
        """What failed, without the fix (when the fix was given apart)."""
        return super().__str__()

    def __str__(self) -> str:
        return f"{self.message}: {self.fix}" if self.fix else self.message


class InputError(ProximityError, ValueError):
    """Bad input: a setting, an argument or a request body; the message names the field and the fix."""

    exit_code = 2
    http_status = 400
    code = "invalid_input"


class SettingsError(InputError):
    """A setting is wrong; the message names it and says how to fix it."""


class NotFoundError(InputError):
    """The thing named does not exist (a container, a job, a sandbox)."""

    http_status = 404
    code = "not_found"


class ConflictError(InputError):
    """The input is valid but clashes with what exists (a name in use, a full pool, a lock)."""

    http_status = 409
    code = "conflict"


class HostError(ProximityError, RuntimeError):
    """An operation failed on the host (a command, a file, a daemon); what changed was undone or is named."""

    code = "host_error"


class NeedsRoot(HostError):
    """The command needs root (a lock, a file or a namespace only root may touch); nothing was changed."""

    code = "needs_root"


class ProxmoxError(ProximityError, RuntimeError):
    """Proxmox refused or failed a request; the message carries Proxmox's own words."""

    http_status = 502
    code = "proxmox_error"


def exit_code(exc: BaseException) -> int:
    """The CLI exit code for an error (1 for anything that is not a ``ProximityError``)."""
    return exc.exit_code if isinstance(exc, ProximityError) else 1


def error_code(exc: BaseException) -> str:
    """The stable machine-readable code of an error (``--json``): ``not_found``, ``conflict``..."""
    return exc.code if isinstance(exc, ProximityError) else "error"


def http_status(exc: BaseException) -> int:
    """The HTTP status for an error (500 for anything that is not a ``ProximityError``)."""
    return exc.http_status if isinstance(exc, ProximityError) else 500
