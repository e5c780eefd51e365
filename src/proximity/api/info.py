"""What the service tells its clients besides the resources: the system's facts, and errors as sentences."""

from __future__ import annotations

from typing import Any

from proximity.settings import HOSTNAME_MESSAGES, LABEL_RE, RESERVED_HOSTNAMES, Settings


def sentence(error: dict[str, Any]) -> str:
    """A validation error as a sentence that names its field: "Memory: input should be ...", or the
    one hostname check's own words, "Hostname 'Bad_Name' is not a valid RFC 1123 label: ...".
    (Pydantic's message starts "Value error, " for a check's own error.)"""
    msg = str(error.get("msg", "")).removeprefix("Value error, ")
    names = [part for part in error.get("loc", ()) if isinstance(part, str) and part != "body"]
    field = names[-1].replace("_", " ") if names else ""
    if field and not msg.lower().startswith(field.lower()):
        msg = f"{field}: {msg[:1].lower()}{msg[1:]}"
    msg = msg[:1].upper() + msg[1:]
    return msg if msg.endswith((".", "?", "!")) else msg + "."


def system_info(settings: Settings, version: str) -> dict[str, Any]:
    """What a client (the dashboard) needs to know to ask well: the backend and whether it needs a
    template, the sandbox, and the hostname rule of settings.check_hostname (its messages too)."""
    from proximity.containers.factory import backend_kind

    backend = backend_kind(settings)
    return {
        "version": version, "sandbox": settings.netns, "backend": backend,
        "needs_template": backend == "proxmox", "template": settings.proxmox_template if backend == "proxmox" else None,
        "bridge": settings.bridge, "domain": settings.domain,
        "hostname_rule": {"pattern": f"^{LABEL_RE.pattern}$", "max_length": 63,
                          "reserved": sorted(RESERVED_HOSTNAMES), "messages": HOSTNAME_MESSAGES},
    }
