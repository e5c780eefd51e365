"""Container MACs are unique across the host, not per zone.

Reservations are kept per zone, but a MAC names one container wherever Proximity looks it up
(leases, recovery, Proxmox's net0), and two zones may each have a container called ``web``:
the stable MAC of a hostname must therefore be checked against every zone's reservations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from proximity.network.render import stable_mac

MAX_SALT = 1000


def free_mac(hostname: str, taken: Mapping[str, Iterable[str]]) -> str:
    """The first stable MAC of ``hostname`` (as today: ``stable_mac(hostname, salt)``, salt 0 up) that
    no zone's reservation holds; ``taken`` maps each zone to the MACs of its reservations.

    The default zone alone gives the same MAC as today's ``Reservations.reserve``.
    """
    used = {mac.lower() for macs in taken.values() for mac in macs}
    for salt in range(MAX_SALT):
        mac = stable_mac(hostname, salt)
        if mac not in used:
            return mac
    raise ValueError(f"no free MAC for {hostname!r} after {MAX_SALT} tries")  # 1000 reservations of one name
