"""What failed, as a type: every error Proximity raises for a user is one of these.

Each class says *what kind* of failure it is, and that decides the CLI exit code and the
HTTP status in one place (:func:`exit_code`, :func:`http_status`):

=====================  ==========  ===========
class                  exit code   HTTP status
=====================  ==========  ===========
``InputError``         2           400
``NotFoundError``      2           404
``ConflictError``      2           409
``HostError``          1           500
``ProxmoxError``       1           502
=====================  ==========  ===========

Exit code 2 means the command's input was refused (invalid, not found, or in conflict with
what exists) and nothing changed; 1 means an operation failed on the host or in Proxmox.
"""

from __future__ import annotations


class ProximityError(Exception):
    """Base class: the message is complete (what failed, and the fix) and shown as is."""

    exit_code = 1
    http_status = 500


class InputError(ProximityError, ValueError):
    """Bad input: a setting, an argument or a request body; the message names the field and the fix."""

    exit_code = 2
    http_status = 400


class NotFoundError(InputError):
    """The thing named does not exist (a container, a job, a sandbox)."""

    http_status = 404


class ConflictError(InputError):
    """The input is valid but clashes with what exists (a name in use, a full pool, a lock)."""

    http_status = 409


class HostError(ProximityError, RuntimeError):
    """An operation failed on the host (a command, a file, a daemon); what changed was undone or is named."""


class ProxmoxError(ProximityError, RuntimeError):
    """Proxmox refused or failed a request; the message carries Proxmox's own words."""

    http_status = 502


def exit_code(exc: BaseException) -> int:
    """The CLI exit code for an error (1 for anything that is not a ``ProximityError``)."""
    return exc.exit_code if isinstance(exc, ProximityError) else 1


def http_status(exc: BaseException) -> int:
    """The HTTP status for an error (500 for anything that is not a ``ProximityError``)."""
    return exc.http_status if isinstance(exc, ProximityError) else 500
