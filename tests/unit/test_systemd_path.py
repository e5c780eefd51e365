"""On a real Proxmox host dnsmasq runs as the proximity-dns unit: check the plan `up` makes for it."""

from pathlib import Path

from proximity.host import DryRunHost
from proximity.network.dnsmasq import SystemdDns, dns_service
from proximity.settings import load_settings


class SystemdDryRunHost(DryRunHost):
    @property
    def has_systemd(self) -> bool:
        return True


def test_systemd_unit_is_installed_enabled_and_started(tmp_path: Path):
    settings = load_settings(systemd_dir=str(tmp_path), dnsmasq_conf=str(tmp_path / "dnsmasq.conf"),
                             run_dir=str(tmp_path / "run"), state_dir=str(tmp_path / "state"))
    host = SystemdDryRunHost()
    service = dns_service(host, settings)
    assert isinstance(service, SystemdDns)
    (unit_path, unit_text), = service.unit_files().items()
    assert unit_path == tmp_path / "proximity-dns.service"
    assert "--conf-file=" + str(settings.dnsmasq_conf) in unit_text and "--keep-in-foreground" in unit_text
    service.enable()
    service.start()
    service.restart()
    assert host.commands == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "proximity-dns.service"],
        ["systemctl", "start", "proximity-dns.service"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "restart", "proximity-dns.service"],
    ]
