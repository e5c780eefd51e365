"""The one Proxmox API client: proxmoxer with an API token, trusting Proxmox's CA and the system store.

The container backend and the host firewall both talk to the Proxmox API; both connect here, so
both trust the same certificates (a firewall client of its own once failed TLS where the backend
succeeded). proxmoxer and requests are imported only when a client is made.
"""

from __future__ import annotations

import ssl
from typing import Any

from proximity.errors import InputError
from proximity.settings import Settings


def system_trust_store() -> str:
    paths = ssl.get_default_verify_paths()
    return paths.cafile or paths.capath or paths.openssl_capath


def _system_trust_adapter() -> Any:
    """HTTPS that trusts the system store as well as the CA file requests is given (``verify=path``).

    Proxmox's own self-signed certificate chains to the CA file; a custom or ACME one to the
    system store (requests alone would trust only one of them, and certifi's bundle, not the system's).
    """
    from requests.adapters import HTTPAdapter
    from urllib3.util.ssl_ import create_urllib3_context

    class SystemTrustAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            context = create_urllib3_context()
            context.load_default_certs()
            super().init_poolmanager(*args, **kwargs, ssl_context=context)

    return SystemTrustAdapter()


def split_token_id(token_id: str) -> tuple[str, str]:
    """("user@realm", "tokenname") of "user@realm!tokenname"; InputError otherwise."""
    user, sep, token_name = token_id.partition("!")
    if not sep:
        raise InputError(f"proxmox token id {token_id!r} must look like 'user@realm!tokenname' "
                         "(Datacenter > Permissions > API Tokens)")
    return user, token_name


def connect(host: str, port: int, token_id: str, token_secret: str, *, verify_tls: bool = True,
            ca_file: str | None = None, timeout: float = 30) -> Any:
    """A ProxmoxAPI for ``token_id`` ("user@realm!tokenname"), verifying TLS against ``ca_file`` and the
    system store (unless ``verify_tls`` is off)."""
    from proxmoxer import ProxmoxAPI

    user, token_name = split_token_id(token_id)
    verify: bool | str = ca_file if (verify_tls and ca_file) else verify_tls
    api = ProxmoxAPI(host, port=port, user=user, token_name=token_name, token_value=token_secret,
                     verify_ssl=verify, timeout=timeout)
    if verify_tls:  # proxmoxer keeps its requests session in _store
        api._store["session"].mount("https://", _system_trust_adapter())
    return api


def connect_settings(settings: Settings, timeout: float = 30) -> Any:
    """The client for the settings' Proxmox host and token (Proxmox's own CA on the local host)."""
    s = settings
    return connect(s.proxmox_host, s.proxmox_port, s.proxmox_token_id or "", s.proxmox_token_secret or "",
                   verify_tls=s.proxmox_verify_tls, ca_file=str(s.proxmox_ca) if s.proxmox_ca else None,
                   timeout=timeout)


def tls_hint(host: str, port: int, ca_file: str | None, exc: Exception) -> str:
    """What a failed TLS verification means, and what to set."""
    return (f"cannot verify the TLS certificate of Proxmox at {host}:{port}: {exc}. Trusted were "
            f"{ca_file or 'no CA file'} and the system trust store ({system_trust_store()}); set proxmox_ca_file "
            "(PROXIMITY_PROXMOX_CA_FILE) to the CA that signed Proxmox's certificate")
