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


def test_further_zones_run_as_instances_of_one_template_unit(tmp_path: Path):
    from proximity.network import render
    from proximity.spec.state import ZoneState
    from proximity.spec.zones import resolve

    settings = load_settings(systemd_dir=str(tmp_path), dnsmasq_conf=str(tmp_path / "dnsmasq.conf"),
                             run_dir=str(tmp_path / "run"), state_dir=str(tmp_path / "state"),
                             zones={"web": {"ipv6": "off"}, "db": {"ipv6": "off"}})
    default, web, db = resolve(settings, ZoneState()).views()
    (web_path, web_unit), = render.dns_unit_files(web, systemd=True).items()
    assert render.dns_unit_files(db, systemd=True) == {web_path: web_unit}  # one template for every zone
    assert web_path == tmp_path / "proximity-dns@.service"
    assert f"--conf-file={tmp_path}/zones/%i.conf" in web_unit and "web" not in web_unit
    assert list(render.dns_unit_files(default, systemd=True)) == [tmp_path / "proximity-dns.service"]
    host = SystemdDryRunHost()
    service = dns_service(host, web)
    service.enable()
    service.start()
    assert host.commands[-2:] == [["systemctl", "enable", "proximity-dns@web.service"],
                                  ["systemctl", "start", "proximity-dns@web.service"]]
