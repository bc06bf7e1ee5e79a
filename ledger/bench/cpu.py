"""CPU time of the processes under test, read from `/proc`, over the measured window.

A process's CPU is `utime + stime` from `/proc/PID/stat` (fields 14 and 15), plus `cutime +
cstime` (16 and 17: children it has waited for, so a PostgreSQL backend or a uvicorn worker that
ends during the window still counts), plus the same for every live descendant. A snapshot
before and one after the load give the CPU seconds the process tree spent in between; a
descendant born during the window counts from zero.

The bench is told the pids (`--api-pid`, `--worker-pid`, `--db-pid`); the PostgreSQL
postmaster is also found on its own when `--database-url` points at a server on this machine
(the parent of the bench's own backend). The bench's own CPU is `os.times()` of its process.
Linux only: elsewhere the figures are simply absent from the report.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class ProcStat:
    ppid: int
    own_ticks: int  # utime + stime
    reaped_ticks: int  # cutime + cstime


def _read_stat(pid: int) -> ProcStat | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = text.rpartition(")")[2].split()
    # fields[0] is field 3 (state); field N is fields[N - 3].
    try:
        return ProcStat(
            ppid=int(fields[1]),
            own_ticks=int(fields[11]) + int(fields[12]),
            reaped_ticks=int(fields[13]) + int(fields[14]),
        )
    except (IndexError, ValueError):
        return None


def _all_stats() -> dict[int, ProcStat]:
    stats: dict[int, ProcStat] = {}
    try:
        entries = list(PROC.iterdir())
    except OSError:
        return stats
    for entry in entries:
        if entry.name.isdigit():
            stat = _read_stat(int(entry.name))
            if stat is not None:
                stats[int(entry.name)] = stat
    return stats


def _tree_ticks(root: int, stats: Mapping[int, ProcStat]) -> dict[int, int]:
    """Ticks per process of the tree under `root` (root included), by pid."""
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.ppid, []).append(pid)
    found: dict[int, int] = {}
    todo = [root] if root in stats else []
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        stat = stats[pid]
        found[pid] = stat.own_ticks + stat.reaped_ticks
        todo.extend(children.get(pid, ()))
    return found


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """Ticks per process tree (one per named root pid), and the bench's own CPU seconds."""

    trees: dict[str, dict[int, int]]
    own_s: float


def snapshot(roots: Mapping[str, Iterable[int]]) -> CpuSnapshot:
    """`roots` names each component ("api", "worker", "db") with the pids of its processes."""
    stats = _all_stats()
    trees: dict[str, dict[int, int]] = {}
    for name, pids in roots.items():
        merged: dict[int, int] = {}
        for pid in pids:
            merged.update(_tree_ticks(pid, stats))
        trees[name] = merged
    times = os.times()
    return CpuSnapshot(trees=trees, own_s=times.user + times.system)


def cpu_seconds(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds each component spent between the snapshots, plus the bench's ("client").

    A process present before and gone after is covered by its parent's reaped ticks; one that
    is new counts from zero. A component whose processes were all gone at the start is left out.
    """
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    spent: dict[str, float] = {"client": after.own_s - before.own_s}
    for name, start in before.trees.items():
        if not start:
            continue
        end = after.trees.get(name, {})
        ticks = sum(end.values()) - sum(start.values())
        spent[name] = max(ticks, 0) / tick
    return spent


def postmaster_of(backend_pid: int) -> int | None:
    """The parent of a PostgreSQL backend on this machine (the postmaster), if visible."""
    stat = _read_stat(backend_pid)
    return stat.ppid if stat is not None and stat.ppid > 1 else None


def per_transfer_ms(spent: Mapping[str, float], transfers: int) -> dict[str, float | None]:
    """`<component>_cpu_ms_per_transfer` for the report: None when nothing was acknowledged."""
    return {
        f"{name}_cpu_ms_per_transfer": (
            round(seconds * 1000 / transfers, 3) if transfers > 0 else None
        )
        for name, seconds in spent.items()
    }
