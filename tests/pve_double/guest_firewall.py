"""The guest firewall's options (``/nodes/{node}/lxc/{vmid}/firewall/options``), as pve-firewall has them.

A mixin of ``PveDouble``: the request is validated against the schema (and the permission
checked) by the double's dispatcher before a handler here runs. Like pve-firewall's
``API2/Firewall/VM.pm``:

* the options live in the guest's own ``/etc/pve/firewall/<vmid>.fw``, not in its config;
  a file that does not exist reads as empty, so GET answers only the options that are set
  (unset ones are at their defaults: ``enable`` 0, ``dhcp`` 0, ``ndp`` 1, ...) plus ``digest``;
* PUT sets each given option and nothing else, ``delete`` removes options, a ``digest`` that
  is not the file's is refused ("detected modified configuration");
* destroying the container removes the file (pve-container's ``destroy_vm``).

A test switches a guest's firewall on, as an admin would, with ``set_guest_firewall``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .schema import split_list

OPTIONS_PATH = "/nodes/{node}/lxc/{vmid}/firewall/options"
MODIFIED = "detected modified configuration - file changed by other user? Try again.\n"


class GuestFirewall:
    """Per-guest firewall options (vmid -> {option: value}); needs the double's ``_state`` lock."""

    guest_fw: dict[int, dict[str, Any]]

    def _guest_fw_routes(self) -> dict[tuple[str, str], Any]:
        """The routes for the double's table; every guest starts without a firewall file."""
        self.guest_fw = {}
        return {("GET", OPTIONS_PATH): self._guest_fw_get, ("PUT", OPTIONS_PATH): self._guest_fw_set}

    def set_guest_firewall(self, vmid: int, **options: Any) -> None:
        """What an admin does in the GUI (Firewall > Options): e.g. ``enable=1``."""
        with self._state:  # type: ignore[attr-defined]
            self.guest_fw.setdefault(vmid, {}).update(options)

    def guest_firewall(self, vmid: int) -> dict[str, Any]:
        """A copy of the options set for ``vmid`` (empty: no file)."""
        with self._state:  # type: ignore[attr-defined]
            return dict(self.guest_fw.get(vmid, {}))

    def _guest_fw_digest(self, vmid: int) -> str:
        return hashlib.sha1(json.dumps(self.guest_fw.get(vmid, {}), sort_keys=True).encode()).hexdigest()

    def _guest_fw_get(self, p: dict[str, Any]) -> dict[str, Any]:
        with self._state:  # type: ignore[attr-defined]
            return {**self.guest_fw.get(p["vmid"], {}), "digest": self._guest_fw_digest(p["vmid"])}

    def _guest_fw_set(self, p: dict[str, Any]) -> None:
        from .server import ApiError, param_error  # the server imports this module

        vmid = p["vmid"]
        known = set(self.schema.properties("PUT", OPTIONS_PATH)) - {"node", "vmid", "delete", "digest"}  # type: ignore[attr-defined]
        with self._state:  # type: ignore[attr-defined]
            if p.get("digest") and p["digest"] != self._guest_fw_digest(vmid):
                raise ApiError(500, MODIFIED)
            options = dict(self.guest_fw.get(vmid, {}))
            for name in split_list(p.get("delete")):
                if name not in known:
                    raise param_error({"delete": f"no such option '{name}'"})
                options.pop(name, None)
            options.update({k: v for k, v in p.items() if k in known and v is not None})
            self.guest_fw[vmid] = options

    def _guest_fw_destroyed(self, vmid: int) -> None:
        with self._state:  # type: ignore[attr-defined]
            self.guest_fw.pop(vmid, None)
