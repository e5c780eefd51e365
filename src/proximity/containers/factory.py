"""Pick the container backend the settings ask for."""

from __future__ import annotations

import socket

from proximity.containers.base import ContainerBackend
from proximity.settings import Settings, SettingsError


def backend_kind(settings: Settings) -> str:
    """The backend the settings ask for, by name ("auto": lxc on a sandbox host, proxmox otherwise)."""
    if settings.backend == "auto":
        return "lxc" if settings.netns else "proxmox"
    return settings.backend


def backend_for(settings: Settings) -> ContainerBackend:
    kind = backend_kind(settings)
    if kind == "lxc":
        from proximity.containers.lxc import LxcBackend

        return LxcBackend(settings.netns, settings.lxc_path or settings.state_dir / "lxc", settings.domain)
    from proximity.containers.proxmox import ProxmoxBackend, ProxmoxConfig

    if not (settings.proxmox_token_id and settings.proxmox_token_secret):
        raise SettingsError(
            "settings 'proxmox_token_id' and 'proxmox_token_secret' are needed for the proxmox backend: create "
            "an API token (Datacenter > Permissions > API Tokens) and set PROXIMITY_PROXMOX_TOKEN_ID="
            "'root@pam!proximity' and PROXIMITY_PROXMOX_TOKEN_SECRET (or put them in /etc/proximity/proximity.toml)"
        )
    return ProxmoxBackend(ProxmoxConfig(
        host=settings.proxmox_host, port=settings.proxmox_port,
        node=settings.proxmox_node or socket.gethostname().split(".")[0],
        token_id=settings.proxmox_token_id, token_secret=settings.proxmox_token_secret,
        verify_tls=settings.proxmox_verify_tls,
        ca_file=str(settings.proxmox_ca) if settings.proxmox_ca else None,
        storage=settings.proxmox_storage, template=settings.proxmox_template, bridge=settings.bridge,
    ))
