"""What every benchmark shares: a result row, percentiles, and the machine it ran on."""

from __future__ import annotations

import os
import platform
import statistics
from dataclasses import asdict, dataclass, field


@dataclass
class Row:
    """One line of bench/results.md: Proximity against its baseline, measured in the same run."""

    what: str
    proximity: float | None
    baseline: float | None
    unit: str  # "s", "ms", "req/s", "q/s", "Gbit/s", "MiB", ...
    target: str  # human text, e.g. "p99 < 10 ms and >= 10x faster"
    met: bool | None  # None: no target for this row
    lower_is_better: bool = True
    notes: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)  # raw numbers, for results.json

    @property
    def ratio(self) -> float | None:
        """How many times better Proximity is than the baseline (> 1 is better)."""
        if not self.proximity or not self.baseline:
            return None
        return self.baseline / self.proximity if self.lower_is_better else self.proximity / self.baseline

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def machine() -> dict[str, object]:
    with open("/proc/meminfo") as fh:
        mem_kib = int(fh.readline().split()[1])
    return {"cores": os.cpu_count(), "memory_gib": round(mem_kib / 1024 / 1024, 1),
            "kernel": platform.release(), "python": platform.python_version()}
