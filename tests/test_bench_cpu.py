"""The bench's CPU accounting from /proc: a process tree's CPU, children that end included."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ledger.bench import cpu

# The child spins until it has itself used this much CPU (process_time, not wall time), so the
# amount it spent is known from below whatever the machine's load.
CHILD_CPU_SECONDS = 0.3
SPIN = f"import time\nwhile time.process_time() < {CHILD_CPU_SECONDS}:\n    pass\n"
TICK_SECONDS = 1 / os.sysconf("SC_CLK_TCK")

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="Linux /proc only")


def test_a_child_that_ended_in_the_window_counts_for_its_parent() -> None:
    """A child started and reaped between the snapshots counts for its parent's tree (like a
    PostgreSQL backend that ends mid-run), and a tree that spent nothing reports nothing."""
    idle = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert idle.stdout is not None and idle.stdout.readline() == b"ready\n"  # started up
    try:
        roots = {"api": (os.getpid(),), "db": (idle.pid,)}
        before = cpu.snapshot(roots)
        subprocess.run([sys.executable, "-c", SPIN], check=True)
        spent = cpu.cpu_seconds(before, cpu.snapshot(roots))
    finally:
        idle.communicate(b"")
    assert spent["api"] >= CHILD_CPU_SECONDS - 2 * TICK_SECONDS
    assert spent["db"] <= 2 * TICK_SECONDS  # the idle process waited on its stdin throughout
    assert spent["client"] >= 0
    per = cpu.per_transfer_ms(spent, 100)
    assert per["api_cpu_ms_per_transfer"] == round(spent["api"] * 1000 / 100, 3)
    assert cpu.per_transfer_ms(spent, 0)["api_cpu_ms_per_transfer"] is None


def test_a_live_grandchild_is_part_of_the_tree() -> None:
    """`serve --workers N`: the work happens in children of the pid the bench is told. The
    grandchild waits for "go", spins, says "spun" and stays alive until its stdin closes."""
    child = (
        "import sys, time\nsys.stdin.readline()\n"
        + SPIN
        + "print('spun', flush=True)\nsys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert parent.stdin is not None and parent.stdout is not None
    try:
        roots = {"api": (parent.pid,)}
        before = cpu.snapshot(roots)
        parent.stdin.write(b"go\n")
        parent.stdin.flush()
        assert parent.stdout.readline() == b"spun\n"
        spent = cpu.cpu_seconds(before, cpu.snapshot(roots))
    finally:
        parent.communicate(b"")
    assert spent["api"] >= CHILD_CPU_SECONDS - 2 * TICK_SECONDS


def test_unknown_pids_report_nothing() -> None:
    roots = {"worker": (2**22 + 12345,)}  # above the default pid_max: never a live process
    spent = cpu.cpu_seconds(cpu.snapshot(roots), cpu.snapshot(roots))
    assert "worker" not in spent
