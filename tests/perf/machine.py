"""What the benchmark reports beside its own figures: how busy the machine was while a row ran (and
who kept it busy), and the peak request rate the fake WaveSpeed saw.

The machine is shared, so each row records the 1-minute load average at its start and end and
splits the CPU time spent during the row (from /proc/stat) into this process (the harness: the
fakes), the clients measured (the bot processes, from /proc/<pid>/stat, or the SDK's process) and
everyone else. Linux only, like the rest of the benchmark's process figures.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.perf.cluster import cpu_seconds, machine_jiffies

TICKS = os.sysconf("SC_CLK_TCK")


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (everything but idle and iowait)."""
    return machine_jiffies()[0] / TICKS


def process_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) process `pid` has used; None once it is gone."""
    try:
        return cpu_seconds(pid)
    except OSError:
        return None


def own_seconds() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class Load:
    """The machine during one row: started with `start()`, the clients' CPU added by `bot()` (read
    while each bot still runs) or to `clients` directly, closed with `stop()`."""

    client: str = "bots"
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    load_start: float = 0.0
    load_end: float = 0.0
    wall: float = 0.0
    harness: float = 0.0
    clients: float = 0.0
    machine: float = 0.0
    _began: tuple[float, float, float] = (0.0, 0.0, 0.0)
    _bots_began: dict[int, float] = field(default_factory=dict)

    def start(self, pids: Iterable[int] = ()) -> None:
        self.load_start = load_average()
        self._began = (time.monotonic(), own_seconds(), busy_seconds())
        self._bots_began = {pid: process_seconds(pid) or 0.0 for pid in pids}

    def bot(self, pid: int) -> None:
        """Count `pid`'s CPU time since `start()` (or since it started); call before it exits."""
        if (now := process_seconds(pid)) is not None:
            self.clients += now - self._bots_began.pop(pid, 0.0)

    def stop(self) -> None:
        began, own, busy = self._began
        self.wall = time.monotonic() - began
        self.harness = own_seconds() - own
        self.machine = busy_seconds() - busy
        self.load_end = load_average()

    @property
    def summary(self) -> str:
        """Load average start->end, then CPU in cores (CPU seconds per second) by whom."""
        if self.wall <= 0:
            return "-"
        others = max(0.0, self.machine - self.harness - self.clients)
        parts = [f"harness {self.harness / self.wall:.2f}", f"{self.client} {self.clients / self.wall:.2f}"]
        parts.append(f"others {others / self.wall:.2f}")
        return f"load {self.load_start:.1f}->{self.load_end:.1f}; cores busy: {', '.join(parts)} of {self.cores}"


def peak_rate(moments: Iterable[float], window: float = 1.0) -> int:
    """The most of `moments` (seconds) that fall within any `window` seconds (a sliding window)."""
    ordered = sorted(moments)
    most = first = 0
    for last, moment in enumerate(ordered):
        while moment - ordered[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most
