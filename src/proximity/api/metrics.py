"""Prometheus metrics: pool, leases, dnsmasq, last converge, per-container traffic."""

from __future__ import annotations

from typing import Any


def _line(name: str, value: float, labels: dict[str, str] | None = None) -> str:
    if labels:
        inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
        return f"{name}{{{inner}}} {value}"
    return f"{name} {value}"


def render_metrics(context: Any) -> str:
    st = context.status.get()
    converge = context.last_converge
    lines = [
        "# HELP proximity_pool_size Addresses in the DHCP range.", "# TYPE proximity_pool_size gauge",
        _line("proximity_pool_size", st.pool_size),
        "# HELP proximity_leases_in_use Active DHCP leases.", "# TYPE proximity_leases_in_use gauge",
        _line("proximity_leases_in_use", st.leases_in_use),
        "# HELP proximity_leases_free Free addresses in the DHCP range.", "# TYPE proximity_leases_free gauge",
        _line("proximity_leases_free", max(0, st.pool_size - st.leases_in_use)),
        "# HELP proximity_dnsmasq_up 1 when dnsmasq runs.", "# TYPE proximity_dnsmasq_up gauge",
        _line("proximity_dnsmasq_up", int(st.dhcp_service_running)),
        "# HELP proximity_healthy 1 healthy, 0.5 degraded, 0 unhealthy.", "# TYPE proximity_healthy gauge",
        _line("proximity_healthy", {"healthy": 1, "degraded": 0.5}.get(st.health_status, 0)),
        "# HELP proximity_last_converge_success 1 when the last converge succeeded.",
        "# TYPE proximity_last_converge_success gauge",
        _line("proximity_last_converge_success", int(bool(converge.get("ok")))),
        "# HELP proximity_last_converge_timestamp_seconds When the last converge ended.",
        "# TYPE proximity_last_converge_timestamp_seconds gauge",
        _line("proximity_last_converge_timestamp_seconds", converge.get("time") or 0),
    ]
    return "\n".join(lines) + "\n"
