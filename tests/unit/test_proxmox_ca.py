"""TLS to Proxmox: Proxmox's own CA by default on the local host, and the system store for a custom
or ACME certificate, against the API double (which serves HTTPS with a CA of its own)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from proximity import settings as settings_module
from proximity.containers.factory import backend_for
from proximity.containers.proxmox import ProxmoxBackendError, system_trust_store
from proximity.settings import Settings, load_settings
from tests.pve_double.server import MemoryRealizer, PveDouble

TOKEN = ("root@pam!proximity", "5f6e7d8c-0000-4000-8000-000000000003")


@pytest.fixture(scope="module")
def double() -> Iterator[PveDouble]:
    with PveDouble(MemoryRealizer(delay=0.01), node="pve", token=TOKEN, tls=True) as running:
        yield running


@pytest.fixture
def other_ca(tmp_path: Path) -> Path:
    """A CA that did not sign the double's certificate (a host whose certificate is from elsewhere)."""
    cert = tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(tmp_path / "key.pem"), "-out", str(cert), "-days", "1",
                    "-subj", "/CN=Some other CA"], check=True, capture_output=True)
    return cert


def settings_for(double: PveDouble, **overrides) -> Settings:
    """The default proxmox_host (localhost) unless overridden; no proxmox_ca_file unless given."""
    return load_settings(**{"backend": "proxmox", "proxmox_port": double.port, "proxmox_node": "pve",
                            "proxmox_token_id": TOKEN[0], "proxmox_token_secret": TOKEN[1], **overrides})


def test_a_stock_host_verifies_with_proxmox_root_ca_and_no_flags(double, monkeypatch):
    monkeypatch.setattr(settings_module, "PVE_ROOT_CA", Path(double.ca_file))
    settings = settings_for(double)
    assert settings.proxmox_host == "localhost" and settings.proxmox_ca_file is None
    assert settings.proxmox_ca == Path(double.ca_file)
    assert backend_for(settings).next_id() >= 100


def test_a_custom_or_acme_certificate_falls_back_to_the_system_store(double, other_ca, monkeypatch):
    # pve-root-ca.pem exists but did not sign the certificate; the system store did.
    monkeypatch.setattr(settings_module, "PVE_ROOT_CA", other_ca)
    monkeypatch.setenv("SSL_CERT_FILE", double.ca_file)
    assert backend_for(settings_for(double)).next_id() >= 100


def test_a_verification_failure_names_the_ca_file_the_system_store_and_the_setting(double, other_ca, monkeypatch):
    monkeypatch.setattr(settings_module, "PVE_ROOT_CA", other_ca)
    answered = len(double.requests)
    with pytest.raises(ProxmoxBackendError) as failure:
        backend_for(settings_for(double)).next_id()
    message = str(failure.value)
    assert "cannot verify the TLS certificate of Proxmox at localhost" in message
    assert str(other_ca) in message and system_trust_store() in message
    assert "proxmox_ca_file" in message
    assert len(double.requests) == answered  # refused at the handshake: no request reached the double


def test_without_proxmox_root_ca_only_the_system_store_is_trusted(double, tmp_path, monkeypatch):
    monkeypatch.setattr(settings_module, "PVE_ROOT_CA", tmp_path / "absent.pem")
    settings = settings_for(double)
    assert settings.proxmox_ca is None
    with pytest.raises(ProxmoxBackendError, match=r"Trusted were no CA file and the system trust store"):
        backend_for(settings).next_id()


def test_the_root_ca_is_for_the_local_host_only_and_an_explicit_file_wins(double, other_ca, monkeypatch):
    monkeypatch.setattr(settings_module, "PVE_ROOT_CA", Path(double.ca_file))
    assert settings_for(double, proxmox_host="pve2.example.com").proxmox_ca is None
    assert settings_for(double, proxmox_ca_file=str(other_ca)).proxmox_ca == other_ca
    explicit = settings_for(double, proxmox_host="127.0.0.1", proxmox_ca_file=double.ca_file)
    assert backend_for(explicit).next_id() >= 100
