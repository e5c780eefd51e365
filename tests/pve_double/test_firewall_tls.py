"""The host-firewall client and the container backend are one Proxmox client: the same CAs, over HTTPS.

Against the double serving HTTPS, with no proxmox_ca_file (a stock Proxmox host: its own CA, or a
custom certificate in the system store), the firewall client must succeed wherever the backend does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from proximity import settings as settings_module
from proximity.containers.factory import backend_for
from proximity.errors import ProxmoxError
from proximity.network.pvefirewall import PveFirewallApi, host_rules
from proximity.settings import Settings, load_settings
from tests.pve_double.server import MemoryRealizer, PveDouble

TOKEN = ("root@pam!proximity", "5f6e7d8c-0000-4000-8000-000000000003")


@pytest.fixture(scope="module")
def double() -> Iterator[PveDouble]:
    with PveDouble(MemoryRealizer(delay=0.01), node="pve", token=TOKEN, tls=True) as running:
        running.firewall_enabled = True
        yield running


def settings_for(double: PveDouble, **overrides) -> Settings:
    return load_settings(**{"backend": "proxmox", "proxmox_port": double.port, "proxmox_node": "pve",
                            "proxmox_token_id": TOKEN[0], "proxmox_token_secret": TOKEN[1], **overrides})


def test_firewall_client_trusts_proxmox_root_ca_like_the_backend(double, monkeypatch):
    monkeypatch.setattr(settings_module, "PVE_ROOT_CA", Path(double.ca_file))
    settings = settings_for(double)
    assert settings.proxmox_ca_file is None
    assert backend_for(settings).next_id() >= 100  # the backend succeeds ...
    api = PveFirewallApi(settings)  # ... and so does the firewall client, over the same TLS
    rule = host_rules(settings)[0]
    api.add(rule)
    assert any(rule.matches(live) for live in api.rules())
    api.delete(rule.comment)
    assert not any(live.get("comment") == rule.comment for live in api.rules())


def test_firewall_client_falls_back_to_the_system_store(double, tmp_path, monkeypatch):
    monkeypatch.setattr(settings_module, "PVE_ROOT_CA", tmp_path / "absent.pem")
    monkeypatch.setenv("SSL_CERT_FILE", double.ca_file)  # a custom or ACME certificate the system trusts
    settings = settings_for(double)
    assert backend_for(settings).next_id() >= 100
    assert isinstance(PveFirewallApi(settings).rules(), list)


def test_a_tls_failure_names_the_ca_and_the_setting(double, tmp_path, monkeypatch):
    monkeypatch.setattr(settings_module, "PVE_ROOT_CA", tmp_path / "absent.pem")
    with pytest.raises(ProxmoxError) as failure:
        PveFirewallApi(settings_for(double)).rules()
    message = str(failure.value)
    assert "cannot verify the TLS certificate of Proxmox at localhost" in message and "proxmox_ca_file" in message
