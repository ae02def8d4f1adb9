"""What /proc says about a process: peak and current RSS, CPU time, children."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    peak: int  # VmHWM, bytes
    current: int  # VmRSS, bytes


def status_bytes(pid: int | str, *keys: str) -> dict[str, int]:
    """``/proc/<pid>/status`` values such as VmHWM and VmRSS, converted from kB to bytes."""
    wanted = set(keys)
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in wanted:
            number, _, unit = value.strip().partition(" ")
            out[name] = int(number) * (1024 if unit.strip() == "kB" else 1)
    return out


def process_memory(pid: int) -> ProcessMemory:
    values = status_bytes(pid, "VmHWM", "VmRSS")
    return ProcessMemory(pid, values.get("VmHWM", 0), values.get("VmRSS", 0))


def _stat_fields(pid: int | str) -> list[str]:
    """Fields of ``/proc/<pid>/stat`` after the command name: state, ppid, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int | str) -> float:
    """User plus system CPU time the process has used so far."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def children(parent: int) -> list[int]:
    """Pids whose parent is ``parent``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if int(_stat_fields(entry)[1]) == parent:
                pids.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return sorted(pids)
