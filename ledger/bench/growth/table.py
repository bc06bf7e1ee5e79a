"""The growth run's report: each figure's ratio to the smallest size, the flags, and the table
a person reads (the JSON object carries the same figures)."""

from __future__ import annotations

from typing import Any

from ledger.bench.growth.options import GROWTH_FLAG_RATIO


def add_ratios(steps: list[dict[str, Any]]) -> list[str]:
    """Each read's (and verify's) ratio to its time at the first size; the flags of those
    beyond `GROWTH_FLAG_RATIO`."""
    if not steps:
        return []
    first = steps[0]
    flagged: list[str] = []
    for step in steps:
        for name, read in step["reads"].items():
            base = first["reads"].get(name, {}).get("median_ms")
            ratio = round(read["median_ms"] / base, 2) if base else None
            read["ratio"] = ratio
            if ratio is not None and ratio > GROWTH_FLAG_RATIO:
                flagged.append(f"{name} at {step['size']:,}: {ratio}x ({read['median_ms']} ms)")
        base_verify = first.get("verify_s")
        ratio = round(step["verify_s"] / base_verify, 2) if base_verify else None
        step["verify_ratio"] = ratio
        if ratio is not None and ratio > GROWTH_FLAG_RATIO:
            flagged.append(f"ledger verify at {step['size']:,}: {ratio}x ({step['verify_s']} s)")
    return flagged


def _cell(read: dict[str, Any]) -> str:
    mark = " !" if (read.get("ratio") or 0) > GROWTH_FLAG_RATIO else ""
    bad = " ERR" if read.get("problem") else ""
    return f"{read['p50_ms']:.1f} / {read['p99_ms']:.1f} ({read.get('ratio') or 0:.1f}x){mark}{bad}"


def _row(label: str, cells: list[str], width: int) -> str:
    return f"{label:<28}" + "".join(f"{cell:>{width}}" for cell in cells)


def render(report: dict[str, Any]) -> str:
    steps: list[dict[str, Any]] = report["steps"]
    width = 30
    lines = [
        "ledger bench --growth: p50 / p99 ms per read (ratio of the p50 to the first size);"
        f" ! beyond {GROWTH_FLAG_RATIO:g}x",
        _row("transfers", [f"{step['size']:,}" for step in steps], width),
    ]
    names = list(steps[0]["reads"]) if steps else []
    lines += [_row(name, [_cell(step["reads"][name]) for step in steps], width) for name in names]

    def figure(label: str, key: str, unit: str = "") -> None:
        cells = ["-" if step.get(key) is None else f"{step[key]:,}{unit}" for step in steps]
        lines.append(_row(label, cells, width))

    figure("fill transfers/s", "transfers_per_s")
    figure("worker drained after (s)", "drain_s")
    figure("event lag p99 (ms)", "event_lag_p99_ms")
    figure("seal lag p99 (ms)", "seal_lag_p99_ms")
    figure("checkpoint lag p99 (ms)", "checkpoint_lag_p99_ms")
    figure("ledger verify (s)", "verify_s")
    figure("verify --since-last (s)", "verify_since_last_s")
    figure("disk bytes/transfer", "disk_bytes_per_transfer")
    figure("WAL bytes/transfer", "wal_bytes_per_transfer")
    figure("database size (bytes)", "database_bytes")
    lines.append(
        f"over the whole fill: {report['wal_bytes_per_transfer']:,} WAL bytes and "
        f"{report['disk_bytes_per_transfer']:,} disk bytes per transfer"
    )
    lines += [f"flag: {flag}" for flag in report["flagged"]]
    lines += [f"problem: {problem}" for problem in report["problems"]]
    lines.append(f"ok: {report['ok']}")
    return "\n".join(lines)
