"""Rows with targets, printed as a table and written as JSON (``bench/results.json``)."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

SECTION_ORDER = ("in-process", "revocation", "http", "scaling", "big", "memory", "stores")


@dataclass(frozen=True)
class Target:
    op: Literal[">=", "<="]
    limit: float
    text: str

    def met(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value >= self.limit if self.op == ">=" else value <= self.limit


def at_least(limit: float, text: str) -> Target:
    return Target(">=", limit, text)


def at_most(limit: float, text: str) -> Target:
    return Target("<=", limit, text)


@dataclass(frozen=True)
class Row:
    section: str
    name: str
    display: str
    value: float | None = None
    target: Target | None = None

    @property
    def status(self) -> str:
        if self.target is None:
            return ""
        return "PASS" if self.value is not None and self.target.met(self.value) else "MISS"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"section": self.section, "name": self.name, "value": self.value}
        out["display"] = self.display
        if self.target is not None:
            out["target"] = {"op": self.target.op, "limit": self.target.limit}
            out["status"] = self.status
        return out


@dataclass
class Report:
    mode: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    load_before: tuple[float, float, float] = field(default_factory=os.getloadavg)

    def add(
        self,
        section: str,
        name: str,
        display: str,
        value: float | None = None,
        target: Target | None = None,
    ) -> None:
        self.rows.append(Row(section, name, display, value, target))

    def ordered(self) -> list[Row]:
        rank = {name: i for i, name in enumerate(SECTION_ORDER)}
        return sorted(self.rows, key=lambda r: rank.get(r.section, len(rank)))

    def misses(self) -> list[Row]:
        return [r for r in self.ordered() if r.status == "MISS"]

    def table(self) -> str:
        rows = self.ordered()
        headers = ("section", "measurement", "value", "target", "status")
        cells = [
            (r.section, r.name, r.display, r.target.text if r.target else "", r.status)
            for r in rows
        ]
        widths = [
            max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
            for i, h in enumerate(headers)
        ]
        widths[2] = min(widths[2], 44)
        lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
        lines.append("  ".join("-" * w for w in widths))
        previous = ""
        for cell in cells:
            section = cell[0] if cell[0] != previous else ""
            previous = cell[0]
            parts = (section, *cell[1:])
            lines.append("  ".join(p.ljust(w) for p, w in zip(parts, widths, strict=True)).rstrip())
        passed = sum(r.status == "PASS" for r in rows)
        missed = sum(r.status == "MISS" for r in rows)
        lines.append(f"\ntargets: {passed} PASS, {missed} MISS")
        for error in self.errors:
            lines.append(f"ERROR {error}")
        return "\n".join(lines)

    def environment(self) -> dict[str, Any]:
        import cryptography
        from cryptography.hazmat.backends.openssl.backend import backend

        cpu = ""
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        return {
            "python": sys.version.split()[0],
            "implementation": platform.python_implementation(),
            "cryptography": cryptography.__version__,
            "openssl": backend.openssl_version_text(),
            "cpus": os.cpu_count(),
            "cpu_model": cpu,
            "load_average_before": list(self.load_before),
            "load_average_after": list(os.getloadavg()),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "seconds": round(time.time() - self.started, 1),
            "environment": self.environment(),
            "rows": [r.as_dict() for r in self.ordered()],
            "details": self.details,
            "notes": self.notes,
            "errors": self.errors,
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n")


# -- formatting helpers ----------------------------------------------------------------------


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


def mb(size: float) -> str:
    """Bytes as decimal megabytes (1 MB = 10^6 bytes), the unit of the targets."""
    return f"{size / 1e6:,.1f} MB"


def rate(value: float, unit: str = "/s") -> str:
    return f"{value:,.0f}{unit}"
