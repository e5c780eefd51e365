"""Several zones new in one `up`: their stanzas are applied by one `ifreload -a` and checked by one
`ifquery -a --check` (batch_reloads), and every zone comes up healthy; the next `up` is a no-op."""

from __future__ import annotations

import json

from proximity.settings import load_settings
from proximity.zones_file import render_zones_file
from tests.integration.tools import proximity

ZONES = ("z1", "z2", "z3")


def test_zones_declared_before_the_first_up_come_up_with_one_ifreload(sandbox):
    sb = sandbox
    path = load_settings(**sb.settings_overrides()).zones_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_zones_file({z: {"subnet": f"10.30.{i}.0/24", "ipv6": "off"} for i, z in enumerate(ZONES, 1)},
                                      []))
    try:
        actions = json.loads(proximity("up", "--json", "--sandbox", sb.name).stdout)["actions"]
        stanzas = [a for a in actions if "ifreload -a" in a]
        assert len(stanzas) == 1 + len(ZONES), actions
        assert sum("the one `ifreload -a` of every zone below" in a for a in stanzas) == len(ZONES), stanzas
        assert stanzas[-1].endswith("with `ifreload -a`"), stanzas  # the last one reloads, once
        rows = {row["name"]: row for row in json.loads(proximity("zone", "list", "--json", "--sandbox", sb.name).stdout)}
        assert {name: rows[name]["health"] for name in ("prox-net", *ZONES)} == dict.fromkeys(("prox-net", *ZONES),
                                                                                           "healthy"), rows
        assert json.loads(proximity("up", "--json", "--sandbox", sb.name).stdout)["actions"] == []
    finally:
        proximity("down", "--purge", "--force", "--sandbox", sb.name, check=False)
        path.unlink(missing_ok=True)
