"""`serve --install-unit` never shadows the unit the Debian package installed."""

import pytest

from proximity.cli import service
from proximity.errors import ConflictError
from proximity.host import DryRunHost
from proximity.settings import validate


def test_install_unit_refuses_where_the_package_put_one(tmp_path, monkeypatch):
    packaged = tmp_path / "proximity-api.service"
    packaged.write_text("[Unit]\n")
    monkeypatch.setattr(service, "PACKAGED_UNITS", (tmp_path / "absent.service", packaged))
    monkeypatch.setattr(DryRunHost, "has_systemd", property(lambda self: True))
    with pytest.raises(ConflictError) as refused:
        service._install_api_unit(validate({}), "127.0.0.1", 8080, dry_run=True)
    assert str(packaged) in str(refused.value) and "systemctl edit proximity-api" in str(refused.value)
